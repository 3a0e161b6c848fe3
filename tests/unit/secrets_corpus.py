"""A corpus of realistic-looking FAKE secrets and PII, and of text that must survive untouched.

Every value is generated here from a fixed seed in the shape of the real thing (prefix,
alphabet, length), so nothing in the repository is a live credential and secret scanners on
the forge have no literal key to trip over. Each secret sits in a line such as an operator
would paste into a task: a shell export, a config file, a curl command, a log line.

Example:
    >>> len(SECRETS) >= 60 and len({c.kind for c in SECRETS}) >= 30
    True
    >>> all(c.secret in c.line for c in SECRETS)
    True
"""

import base64
import random
import string
from dataclasses import dataclass

_rng = random.Random(20261201)

ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"


def _r(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


@dataclass(frozen=True)
class Case:
    """One planted secret: its kind, the exact secret value, and the line that carries it."""

    kind: str
    secret: str
    line: str


def _pem(label: str, lines: int = 6) -> str:
    body = "\n".join(_r(B64, 64) for _ in range(lines))
    return f"-----BEGIN {label}-----\n{body}\n{_r(B64, 20)}==\n-----END {label}-----"


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _build() -> list[Case]:
    c: list[Case] = []

    def add(kind: str, secret: str, template: str) -> None:
        c.append(Case(kind, secret, template.format(s=secret)))

    # Model providers (our own patterns: detect-secrets has only the legacy OpenAI shape).
    add("anthropic_key", f"sk-ant-api03-{_r(B64URL, 93)}AA",
        "export ANTHROPIC_API_KEY={s}")
    add("anthropic_key", f"sk-ant-admin01-{_r(B64URL, 93)}AA",
        "The admin key for the org is {s}, rotate it after the audit.")
    add("openai_key", f"sk-proj-{_r(B64URL, 156)}",
        "OPENAI_API_KEY={s}")
    add("openai_key", f"sk-{_r(ALNUM, 20)}T3BlbkFJ{_r(ALNUM, 20)}",
        "client = OpenAI(api_key=\"{s}\")")
    add("openai_key", f"sk-svcacct-{_r(B64URL, 74)}",
        "service account key: {s} (ops-bot)")
    add("openrouter_key", f"sk-or-v1-{_r(HEX, 64)}",
        "curl https://openrouter.ai/api/v1/chat -H 'Authorization: Bearer {s}'")
    add("huggingface_token", f"hf_{_r(ALNUM, 34)}",
        "huggingface-cli login --token {s}")
    # Cloud.
    add("aws_access_key", f"AKIA{_r(UPPER_ALNUM, 16)}",
        "aws_access_key_id = {s}")
    add("aws_access_key", f"ASIA{_r(UPPER_ALNUM, 16)}",
        "Temporary creds issued: {s} expires 2026-12-01T15:00:00Z")
    add("aws_secret_key", _r(B64, 40),
        "aws_secret_access_key = {s}")
    add("aws_secret_key", _r(B64, 40),
        "export AWS_SECRET_ACCESS_KEY=\"{s}\"")
    add("azure_storage_key", _r(B64, 86) + "==",
        "DefaultEndpointsProtocol=https;AccountName=vosbackups;AccountKey={s};"
        "EndpointSuffix=core.windows.net")
    add("gcp_private_key_id", _r(HEX, 40),
        '  "private_key_id": "{s}",')
    add("private_key", _r(B64, 64),
        '  "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC'
        '\\n{s}\\n-----END PRIVATE KEY-----\\n",')
    add("google_api_key", f"AIza{_r(B64URL, 35)}",
        "maps: https://maps.googleapis.com/maps/api/geocode/json?key={s}")
    add("google_oauth_secret", f"GOCSPX-{_r(B64URL, 28)}",
        "GOOGLE_CLIENT_SECRET={s}")
    add("digitalocean_token", f"dop_v1_{_r(HEX, 64)}",
        "doctl auth init --access-token {s}")
    add("databricks_token", f"dapi{_r(HEX, 32)}",
        "DATABRICKS_TOKEN={s}")
    # Source forges and package registries.
    add("github_token", f"ghp_{_r(ALNUM, 36)}",
        "git clone https://x-access-token@github.com/acme/infra.git  # token {s}")
    add("github_token", f"github_pat_11{_r(UPPER_ALNUM, 20)}_{_r(ALNUM, 59)}",
        "GH_TOKEN={s} gh pr list")
    add("github_token", f"ghs_{_r(ALNUM, 36)}",
        "installation token {s} expires in 1h")
    add("gitlab_token", f"glpat-{_r(B64URL, 20)}",
        "GITLAB_TOKEN: {s}")
    add("npm_token", f"npm_{_r(ALNUM, 36)}",
        "//registry.npmjs.org/:_authToken={s}")
    add("npm_token", f"npm_{_r(ALNUM, 36)}",
        "set NPM_TOKEN to {s} in the CI settings")
    add("pypi_token", f"pypi-AgEIcHlwaS5vcmc{_r(B64URL, 120)}",
        "twine upload -u __token__ -p {s} dist/*")
    add("artifactory_token", f"AKCp8{_r(ALNUM, 68)}",
        "artifactory api key {s}")
    # Chat and messaging.
    add("slack_token", f"xoxb-{_r(string.digits, 12)}-{_r(string.digits, 13)}-"
        f"{_r(ALNUM, 24)}", "SLACK_BOT_TOKEN={s}")
    add("slack_token", f"xoxp-{_r(string.digits, 12)}-{_r(string.digits, 12)}-"
        f"{_r(string.digits, 13)}-{_r(HEX, 32)}", "user token {s} (do not share)")
    add("slack_app_token", f"xapp-1-A{_r(UPPER_ALNUM, 10)}-{_r(string.digits, 13)}-"
        f"{_r(HEX, 64)}", "SLACK_APP_TOKEN={s}")
    add("slack_webhook", f"https://hooks.slack.com/services/T{_r(UPPER_ALNUM, 8)}/"
        f"B{_r(UPPER_ALNUM, 10)}/{_r(ALNUM, 24)}",
        "Post alerts to {s} when the backup fails.")
    add("slack_webhook", f"https://hooks.slack.com/workflows/T{_r(UPPER_ALNUM, 8)}/"
        f"A{_r(UPPER_ALNUM, 10)}/{_r(string.digits, 18)}/{_r(ALNUM, 24)}",
        "workflow trigger: {s}")
    add("discord_webhook", f"https://discord.com/api/webhooks/{_r(string.digits, 18)}/"
        f"{_r(B64URL, 68)}", "DISCORD_WEBHOOK_URL={s}")
    add("discord_token", f"M{_r(B64URL, 23)}.{_r(B64URL, 6)}.{_r(B64URL, 27)}",
        "bot.run('{s}')")
    add("telegram_token", f"{_r(string.digits, 10)}:AA{_r(B64URL, 33)}",
        "https://api.telegram.org/bot{s}/sendMessage")
    add("twilio_key", f"SK{_r(HEX, 32)}",
        "TWILIO_API_KEY_SID={s}")
    add("twilio_key", _r(HEX, 32),
        "TWILIO_AUTH_TOKEN={s}")
    add("sendgrid_key", f"SG.{_r(B64URL, 22)}.{_r(B64URL, 43)}",
        "sendgrid: {s}")
    add("mailchimp_key", f"{_r(HEX, 32)}-us14",
        "mailchimp key {s} for the newsletter list")
    # Payments and commerce.
    add("stripe_key", f"sk_live_{_r(ALNUM, 99)}",
        "STRIPE_SECRET_KEY={s}")
    add("stripe_key", f"rk_live_{_r(ALNUM, 24)}",
        "restricted key {s} (read-only charges)")
    add("square_secret", f"sq0csp-{_r(B64URL, 43)}",
        "square application secret: {s}")
    add("shopify_token", f"shpat_{_r(HEX, 32)}",
        "X-Shopify-Access-Token: {s}")
    # Our own planes.
    add("webhook_secret", f"whsec_{base64.b64encode(_rng.randbytes(32)).decode()}",
        "door source 'stripe-prod' signing secret {s}")
    add("webhook_secret", f"whsec_{base64.b64encode(_rng.randbytes(24)).decode()}",
        "VOS_DOOR_SECRET={s}")
    add("tailscale_key", f"tskey-auth-k{_r(ALNUM, 12)}CNTRL-{_r(ALNUM, 33)}",
        "tailscale up --authkey={s} --hostname=vos-host")
    add("vault_token", f"hvs.{_r(B64URL, 90)}",
        "VAULT_TOKEN={s} vault kv get secret/vos")
    add("age_secret_key", f"AGE-SECRET-KEY-1{_r(UPPER_ALNUM, 58)}",
        "# backup key\n{s}")
    # Tokens in headers and URLs.
    add("jwt", f"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{_r(B64URL, 60)}.{_r(B64URL, 43)}",
        "cookie: session={s}; Path=/; HttpOnly")
    add("bearer_token", _r(B64URL, 40),
        "curl -H 'Authorization: Bearer {s}' https://api.internal/v1/jobs")
    add("basic_auth", _basic("deploy", "Tr0ub4dor&3"),
        "Authorization: Basic {s}")
    add("basic_auth", _basic("admin", "correct horse"),
        "proxy_set_header Authorization \"Basic {s}\";")
    add("url_password", "Pg-" + _r(ALNUM, 18),
        "DATABASE_URL=postgres://vos_app:{s}@10.0.0.5:5432/vos")
    add("url_password", _r(ALNUM, 24),
        "REDIS_URL=redis://:{s}@cache.internal:6379/0")
    add("url_password", _r(ALNUM, 16),
        "mongodb+srv://reporting:{s}@cluster0.abcde.mongodb.net/?retryWrites=true")
    add("url_password", "hunter" + _r(string.digits, 4),
        "amqp://guest:{s}@rabbit:5672/%2f")
    # Passwords by key name (no word boundary before PASSWORD).
    add("password_assignment", _r(ALNUM, 14) + "!",
        "DB_PASSWORD={s}")
    add("password_assignment", _r(ALNUM, 16),
        "PGPASSWORD={s} psql -h 127.0.0.1 -U vos vos")
    add("password_assignment", "correct horse battery staple",
        'passphrase: "{s}"')
    add("password_assignment", "the quick brown fox 42",
        "GPG_PASSPHRASE='{s}' ./restore.sh")
    add("password_assignment", "Summer2026!",
        "mysql: {{user: root, password: {s}}}")
    add("password_assignment", _r(ALNUM, 20),
        "  client_secret: {s}")
    add("password_assignment", _r(ALNUM, 12),
        'SMTP_PASS="{s}"')
    add("password_assignment", base64.b64encode(_rng.randbytes(12)).decode(),
        "  password: {s}   # k8s Secret data")
    # Unknown key shapes: only the entropy rule can see them.
    add("high_entropy", _r(B64URL, 43) + "=",
        "FERNET_KEY={s}")
    add("high_entropy", _r(ALNUM, 32),
        "X-Acme-Signature: {s}")
    add("high_entropy", _r(ALNUM, 40),
        "paste this into the partner portal: {s}")
    add("high_entropy", base64.b64encode(_rng.randbytes(30)).decode(),
        '"auth": "{s}"')
    # PII (with pii=("email", "phone", "iban", "credit_card")).
    add("email", "maria.lopez@example.org", "Escalate to {s} if the backup is late.")
    add("email", "ops+alerts@acme-corp.io", "alert_to: {s}")
    add("phone", "+49 170 1234567", "on-call phone {s}")
    add("iban", "DE89 3704 0044 0532 0130 00", "refund to IBAN {s}")
    add("credit_card", "4111 1111 1111 1111", "card on file {s}")
    # Multi-line PEM blocks.
    for label in ("RSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "EC PRIVATE KEY",
                  "PGP PRIVATE KEY BLOCK"):
        pem = _pem(label)
        c.append(Case("private_key", pem.split("\n")[2], f"Here is the key:\n{pem}\nthanks"))
    return c


SECRETS: list[Case] = _build()

# PII names the corpus needs switched on.
PII = ("email", "phone", "iban", "credit_card")

# Lines that must come back unchanged (with pii=(): the email pattern is configurable, and a
# DMARC report address is an address, not a secret).
NEGATIVES: list[str] = [
    "_dmarc.example.org. 3600 IN TXT \"v=DMARC1; p=reject; rua=mailto:dmarc@example.org; "
    "ruf=mailto:forensics@example.org; fo=1; adkim=s; aspf=s\"",
    "v=spf1 include:_spf.google.com ~all",
    "task 6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f moved to Review by agent "
    "0d9b8c7a-6e5f-4a3b-9c2d-1e0f9a8b7c6d",
    "Fixed in commit 9fceb02d0ae598e95dc970b74767f19372d61af8 (merge of "
    "3f786850e387550fdab836ed7e6dc881de23001b).",
    "short sha a1b2c3d, tag v1.2.3, release 2.0.0-rc.1+build.5, python 3.12.7",
    "image ghcr.io/acme/vos-worker@sha256:"
    "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    "The worker retries a failed call with exponential backoff and then parks the task; "
    "an operator can retry it from the board once the provider is healthy again.",
    "Please rotate the database password next week and tell the team where the new one is.",
    "| agent | budget | spent |\n|-------|-------:|------:|\n| CTO | $30.00 | $12.41 |\n"
    "| Orchestrator | $50.00 | $0.00 |",
    "def backoff(attempt: int) -> float:\n    return min(3600, 30 * 2 ** (attempt - 1))",
    "for i in range(10):\n    total += prices[i] * quantity[i]",
    "See https://docs.python.org/3/library/re.html#re.Match.span and "
    "https://github.com/Yelp/detect-secrets/blob/master/README.md",
    "postgres://db.internal:5432/vos is the DSN; ssh://deploy@10.0.0.7:2222 for the host",
    "max_output_tokens: 512\ncontext_window: 8192\nretrieval_token_budget: 600",
    "api_key_env: ANTHROPIC_API_KEY",
    "password: ${DB_PASSWORD}",
    "Open port 443 on 100.64.0.1, version 1.2.3, ticket VOS-42, 2026-11-24 16:40 UTC.",
    "2026-12-01T13:38:26.123456+00:00 INFO worker picked task 1842 (attempt 2/5)",
    "tests/integration/test_sanitizer_wire.py::test_corpus_never_reaches_the_wire PASSED",
    "app/db/migrations/0300_agents_as_code.sql adds retired_at and budget_period",
    "The quick brown fox jumps over the lazy dog while the CI pipeline runs 1,234 tests.",
    "Use `vos agents apply --file agents.yaml` and then `vos agents work --config agents.yaml`.",
    "MAC 00:1a:2b:3c:4d:5e, IPv6 fe80::1ff:fe23:4567:890a, CIDR 10.0.0.0/8",
    "Set the token budget in agents.yaml; tokens are counted per call.",
    "Basic authentication is disabled; use an operator token instead.",
    "checksum md5 9e107d9d372bb6826bd81d3542a419d6 and sha1 "
    "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
    "ContainerRegistry/RepositoryName/ImageTag naming follows kebab-case-everywhere",
    "Kubernetes uses metadata.annotations for kubectl.kubernetes.io/last-applied-configuration",
    'password = os.environ.get("DB_PASSWORD")\nself.api_key = api_key\nsecret = operator.secret',
    '"bad_token": "That token is not valid (mistyped, revoked, or of another database)."',
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk2p8n7uK0e3QyV5tLwXb1cRzM9hJ4dF6sA2oP8qN3w ops@laptop",
]
