"""Developer tools of the toolkit: wire-format fake providers, the demo workforce and
`vos dev`. Never shipped in the app image: they serve a laptop, the tests and staging."""
