"""Retrieval workload: the operations wiki of a small island ferry company (Northsound Ferries).

Written as a knowledge base, not as a retrieval test: pages have headings, tables, lists,
code and the boilerplate a real wiki carries (document control, scope, revision history);
the vessel and terminal pages are near-duplicates cut from one template, as is last year's
fare sheet. Tasks are phrased the way a dispatcher or a ship's officer would ask, tagged by
type BEFORE the first run (the tags are fixed; do not edit them to fit results):

- paraphrase: the question restates the fact in other words;
- synonym: a key term appears only as a synonym or acronym in the page;
- low-overlap: little or no vocabulary shared with the passage beyond one anchor;
- multi-fact: needs two or more passages, often from different pages;
- title-only: the entity that disambiguates (a vessel, a terminal, a year) is named only in
  the page title, so near-duplicate pages can only be told apart by it.

`needs` are exact substrings of the page text: a task's recall is the share of them found in
the context sent.

Example:
    from benchmarks.workloads.ferries import build
    documents, tasks = build()
    len(documents), len(tasks)     # (24, 63)
"""

from __future__ import annotations

import random

SEED = 4172

BOILERPLATE = [
    "This page is maintained by the named owner. Anyone may suggest a change through the "
    "wiki's comment thread; the owner decides and records the change in the revision table "
    "below. Printed copies are uncontrolled and should be checked against the wiki before use.",
    "Where this page conflicts with the Safety Management System manual, the manual wins. "
    "Report the conflict to the Designated Person Ashore so that one of the two documents can "
    "be corrected at the next review.",
    "Staff new to the company read this page during their familiarisation week and sign the "
    "training record held by their line manager. Agency staff are briefed by the duty "
    "supervisor before their first shift.",
    "The company operates year-round lifeline services to four island communities. Decisions "
    "that affect sailings should weigh the needs of residents, hauliers and emergency "
    "services, who depend on the timetable more than visitors do.",
    "Figures quoted on this page were correct at the last review. Prices, limits and contact "
    "details change; if something looks out of date, ask the owner rather than guessing.",
    "Nothing on this page overrides the judgement of the master, who has the final word on "
    "the safety of the vessel, her crew and her passengers under maritime law.",
    "Records created under this procedure are retained for six years and then destroyed, "
    "unless they relate to an open claim, an investigation or a regulator's enquiry.",
    "Questions about this page go to the owner first and to the operations manager if the "
    "owner is unavailable. Out of hours, the duty operations officer can be reached through "
    "the operations centre.",
    "The wiki is the single source of truth for operating procedures. Email attachments, "
    "chat messages and notes taped inside wheelhouses are not procedures.",
    "All times on this page are local time at the port of departure unless stated otherwise.",
]

GLOSSARY = [
    ("Master", "the officer in command of a vessel; on our ships also the person who decides "
     "whether a sailing goes ahead"),
    ("Chief officer", "the master's deputy, responsible for cargo, stability and the deck crew"),
    ("Chief engineer", "in charge of the engine room, machinery and fuel on board"),
    ("Purser", "the officer responsible for passengers, catering and the ship's cash"),
    ("Linkspan", "a hinged bridge between the quay and a vessel's ramp that rises and falls "
     "with the tide"),
    ("Marshalling lanes", "the numbered lanes where vehicles wait before loading"),
    ("Operations centre", "the shore team in Brackwater that plans sailings, watches the "
     "weather and talks to customers; staffed from 05:00 to 23:00"),
    ("Lifeline service", "a route that an island community depends on for food, fuel, "
     "medical care and schooling"),
    ("Relief vessel", "a ship that covers another's sailings during dry-docking or breakdown"),
    ("Dry-docking", "the period when a vessel is out of the water for survey and repairs"),
    ("SMS", "the Safety Management System: the company's manual of safe working practice "
     "required by the ISM Code"),
    ("ISM Code", "the International Safety Management Code adopted by the IMO"),
    ("MCA", "the Maritime and Coastguard Agency, which surveys and certifies our vessels"),
    ("Defect log", "the record of faults on a vessel, kept in the maintenance system"),
    ("Technical superintendent", "the shore engineer who plans maintenance for the fleet"),
    ("Crewing office", "the shore team that plans rosters, travel and training for seafarers"),
    ("Haulier", "a company that moves freight by road and books vehicle space with us"),
    ("CEU", "car equivalent unit: the deck space of one ordinary car, used for planning"),
    ("Ullage", "the empty space left at the top of a tank"),
    ("Duty supervisor", "the senior member of the shore team on shift at a terminal"),
]

EXTRA = [
    "Our fleet is small, so a change made for one ship usually affects the timetable of "
    "another. Before changing anything that touches sailings, check with the operations "
    "centre how the change ripples through the week.",
    "Island communities are consulted on timetable changes through the ferry users' "
    "groups, which meet twice a year with the operations manager and the council.",
    "Training for this procedure is part of the annual refresher. A short quiz in the "
    "learning system confirms that staff have read the current version.",
    "Deviations from this procedure must be agreed in advance with the owner, except in an "
    "emergency, when the person in charge acts and reports afterwards.",
    "Where a task needs two people, both names are recorded. Working alone on deck at "
    "night or in an enclosed space is never allowed.",
    "Photographs of the work area before and after a job help the next crew and are "
    "attached to the record where the app allows.",
    "Contractors working on our vessels follow this page as well as their own procedures; "
    "the stricter of the two applies.",
    "Customer-facing staff use plain language and avoid internal terms such as CEU or "
    "linkspan when explaining a decision to a passenger.",
    "Audits check a sample of records against this page every year. Findings are tracked to "
    "closure in the audit log and reported to the board.",
    "Budget for consumables under this procedure sits with the vessel or terminal that "
    "uses them; order through the purchasing system, not by phone.",
    "Seasonal staff join in April and leave in October. Their line managers make sure they "
    "have read this page before working unsupervised.",
    "If a regulator, journalist or lawyer asks about this procedure, refer them to the "
    "communications team and do not comment yourself.",
]

OWNERS = ["Morag Sinclair", "Ewan Rendall", "Kirsty Flett", "Duncan Isbister",
          "Aileen Drever", "Callum Tulloch", "Fiona Linklater"]


def _frame(rng: random.Random, title: str, owner: str, body: str) -> str:
    """Wrap a page body in the wiki's template: control table, scope, history, notes."""
    notes = rng.sample(BOILERPLATE, len(BOILERPLATE))
    extra = "\n\n".join(rng.sample(EXTRA, len(EXTRA)))
    terms = "\n".join(f"- **{term}**: {meaning}."
                      for term, meaning in rng.sample(GLOSSARY, len(GLOSSARY)))
    roles = ["Operations manager", "Technical superintendent", "Crewing manager",
             "Customer services lead", "Safety and compliance officer", "Fleet master",
             "Terminal manager"]
    contacts = "\n".join(f"| {role} | {person} | ext. {rng.randint(200, 299)} | "
                          f"{person.split()[0].lower()}@northsound.example |"
                          for role, person in zip(roles, rng.sample(OWNERS, 7), strict=True))
    revisions = "\n".join(
        f"| {rng.randint(1, 5)}.{rng.randint(0, 9)} | 20{rng.randint(21, 26)}-"
        f"{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} | {rng.choice(OWNERS)} | "
        f"{rng.choice(['Annual review', 'Typos', 'New contacts', 'Reformatted', 'Minor edits'])}"
        " |" for _ in range(4))
    return f"""# {title}

| Field | Value |
|---|---|
| Owner | {owner} |
| Status | Approved |
| Review cycle | {rng.choice(['12 months', '24 months', '6 months'])} |

## Purpose and scope

{notes[0]}

{notes[1]}

## Definitions

{terms}

{body}

## Background

{extra}

## Contacts

| Role | Name | Phone | Email |
|---|---|---|---|
{contacts}

## General notes

{notes[2]}

{notes[3]}

{notes[4]}

{notes[5]}

{notes[6]}

{notes[7]}

{notes[8]}

{notes[9]}

## Revision history

| Version | Date | Author | Change |
|---|---|---|---|
{revisions}
"""


VESSELS = [
    # name, length m, pax, cars, engines, built, yard, call sign, quirk, drydock month
    ("MV Kittiwake", 49.9, 250, 32, "two Volvo Penta D16 diesels", 2009, "Ferguson, Port "
     "Glasgow", "MKTW7", "the bow thruster trips its breaker if run for more than four "
     "minutes continuously; let it rest for two minutes before resetting", "January"),
    ("MV Guillemot", 45.0, 195, 24, "two Caterpillar C32 diesels", 2004, "Cochrane, Selby",
     "MGLM4", "the stern ramp hydraulics are slow below five degrees Celsius; start the "
     "power pack ten minutes before arrival in winter", "February"),
    ("MV Puffin", 35.5, 120, 14, "two Scania DI16 diesels", 1998, "McTay Marine, Bromborough",
     "MPFN2", "the starboard fuel gauge reads about ten percent high; always confirm tank "
     "contents by sounding", "March"),
    ("MV Shearwater", 64.0, 400, 52, "a diesel-electric plant with three Wartsila 6L20 "
     "generators", 2018, "Remontowa, Gdansk", "MSHW9", "the lift to the passenger deck "
     "refuses to move if the car deck door sensor is dirty; wipe the sensor before calling "
     "an engineer", "October"),
    ("MV Fulmar", 45.0, 195, 24, "two Caterpillar C32 diesels", 2005, "Cochrane, Selby",
     "MFLM5", "the radar mast vibrates at 1,450 engine rpm; keep transit revs at 1,400 or "
     "1,500", "November"),
]


def vessel_page(rng: random.Random, v: tuple) -> tuple[str, str]:
    name, length, pax, cars, engines, built, yard, call, quirk, dock = v
    body = f"""## Particulars

| Item | Value |
|---|---|
| Length overall | {length} m |
| Passenger certificate | {pax} passengers (summer), {int(pax * 0.8)} (winter) |
| Vehicle deck | {cars} cars |
| Main engines | {engines} |
| Year built | {built} |
| Builder | {yard} |
| Radio call sign | {call} |

## Handling and known quirks

Masters joining the vessel for the first time complete two supervised arrivals at each
port before taking her alone. On this ship, {quirk}. Report any recurrence in the defect
log so that the technical superintendent can see the pattern.

Windage is significant when the vehicle deck is loaded with high-sided vehicles. Allow more
room than the chart suggests when turning in the harbour with a strong beam wind.

## Maintenance intervals

- Main engine oil and filters: every 500 running hours
- Lifeboat and rescue boat davits: load test every 5 years, inspection monthly
- Fire detection system: weekly test by the engineer on watch
- Annual dry-docking window: {dock}
- Bow and stern ramp seals: inspected at every dry-dock

## Telemetry agent

The engine-room telemetry box reports to the shore dashboard. Its configuration is kept
here so that it can be restored after a replacement.

```yaml
vessel: {call.lower()}
uplink: 4g-primary
interval_seconds: {rng.choice([15, 30, 60])}
channels:
  - main_engine_rpm
  - fuel_flow_lph
  - exhaust_temp_c
alarm_forward: ops-centre
```

## Emergency equipment

- Liferafts: {max(2, pax // 50)} x 65-person throw-over rafts
- Marine evacuation system: {'yes' if pax > 300 else 'no'}
- Rescue boat: one, on the starboard side
- Defibrillator: at the purser's office
"""
    return f"{name}: vessel handbook", _frame(rng, f"{name}: vessel handbook",
                                              rng.choice(OWNERS), body)


TERMINALS = [
    # name, island/mainland, opens, closes, check-in minutes, berth, vhf, parking
    ("Brackwater terminal", "the mainland", "05:45", "21:30", 30, "linkspan 1", 14,
     "a pay-and-display car park with 180 spaces; overnight parking costs £6"),
    ("Port Ellis terminal (Isle of Tarn)", "Tarn", "06:30", "20:00", 20, "the pier berth", 12,
     "free parking for 60 cars on the pier approach; no overnight parking in summer"),
    ("Skerray terminal", "Skerray", "07:00", "19:15", 15, "the south slipway", 16,
     "a gravel area for about 25 cars; free"),
    ("Holm Bay terminal", "Holm", "06:45", "19:45", 20, "linkspan 2", 11,
     "free parking for 40 cars behind the waiting room"),
]


def terminal_page(rng: random.Random, t: tuple) -> tuple[str, str]:
    name, place, opens, closes, checkin, berth, vhf, parking = t
    body = f"""## Opening hours

| Day | Waiting room | Ticket office |
|---|---|---|
| Monday to Friday | {opens}-{closes} | {opens}-{closes} |
| Saturday | {opens}-{closes} | {opens}-12:00 |
| Sunday | {opens}-{closes} | closed; buy on board |

Vehicles must be in the marshalling lanes at least {checkin} minutes before departure.
Foot passengers may board until five minutes before departure.

## Berth and harbour

Vessels use {berth}. The harbourmaster listens on VHF channel {vhf} and must be called
before entering the harbour limits. Berthing lines are handled by the shore team during
opening hours; outside them, the crew lands a line handler.

## Facilities

- Toilets, including an accessible toilet
- Vending machines for hot drinks
- Free public wifi in the waiting room
- Parking: {parking}

## Local contacts

The terminal supervisor on {place} is the first contact for the shore team. Fuel, water and
waste reception are booked through the operations centre, not the terminal.
"""
    return name, _frame(rng, name, rng.choice(OWNERS), body)


FARES_2026 = """## Single fares, 2026 season

| Ticket | Brackwater-Tarn | Brackwater-Skerray | Inter-island |
|---|---|---|---|
| Adult | £9.40 | £7.10 | £4.20 |
| Child (5-15) | £4.70 | £3.55 | £2.10 |
| Car up to 5 m | £38.00 | £29.50 | £16.00 |
| Motorcycle | £14.00 | £11.00 | £6.50 |
| Bicycle | free | free | free |

Children under five travel free but still need a zero-fare ticket for the passenger count.

## Concessions

- Island residents holding a Resident Card pay 40% of the adult fare.
- Holders of a national entitlement card aged 60 or over travel free as foot passengers.
- Young Scot card holders aged 16 to 21 pay half fare.
- Hauliers with an account are invoiced monthly at the commercial rate sheet.

## Return and multi-journey tickets

A return costs twice the single. A book of ten single journeys for foot passengers costs
the price of eight and is valid for twelve months from purchase.
"""

FARES_2025 = FARES_2026.replace("2026", "2025").replace("£9.40", "£8.90").replace(
    "£38.00", "£35.50").replace("40% of the adult fare", "50% of the adult fare").replace(
    "the price of eight", "the price of nine")

PAGES = {
    "Fares and concessions 2026": FARES_2026,
    "Fares and concessions 2025 (superseded)": FARES_2025,
    "Adverse weather and cancellation policy": """## Who decides

The decision to sail, delay or cancel rests with the master. The operations centre advises
on forecasts, tides and onward connections but never instructs a master to sail.

## Guidance limits

Masters use these as a starting point, not as rules:

| Vessel class | Mean wind | Significant wave height |
|---|---|---|
| Shearwater | 40 knots | 3.5 m |
| Kittiwake, Guillemot, Fulmar | 35 knots | 2.5 m |
| Puffin | 30 knots | 2.0 m |

A sailing is reviewed early if gusts are forecast above 50 knots, whatever the mean.

## Telling passengers

When a sailing is at risk, the operations centre sets the route status to amber on the
website and sends a text message to booked customers at least three hours before
departure where the forecast allows. Cancellations are announced as soon as the master
decides; the status turns red and every booked customer is contacted.

## Priority after disruption

When sailings resume, the first departures carry, in order: emergency services, livestock
and perishable freight, residents with medical appointments, and then everyone else in
booking order.
""",
    "Crew hours of work and rest": """## Minimum rest

Every seafarer must have at least 10 hours of rest in any 24-hour period and at least 77
hours in any 7-day period. Rest may be split into no more than two periods, one of which
must be at least 6 hours long.

## Recording

Hours are recorded daily on the rest-hours sheet and signed weekly by the master. The
sheets are scanned and filed by the crewing office every Monday.

## Swapping shifts

Crew may swap shifts with a colleague of the same grade if both still meet the rest rules.
Swaps are requested through the crewing app at least 48 hours ahead; shorter notice needs
the master's approval by phone.

## Fatigue

Anyone who feels unfit through fatigue tells the master or chief engineer before the watch.
No one is disciplined for reporting fatigue.
""",
    "Carriage of dangerous goods": """## Declaration

Shippers declare dangerous goods on the DG form at least 24 hours before the sailing. The
form states the UN number, proper shipping name, class, quantity and packing group.
Undeclared dangerous goods found at check-in are refused.

## Restrictions

- Class 1 explosives: only on dedicated freight sailings, never with passengers.
- Class 2.1 flammable gas (including LPG cylinders over 47 kg): at most 250 kg per sailing
  when more than 25 passengers are carried.
- Class 7 radioactive material: needs the Designated Person Ashore's written approval.

## Stowage

Dangerous goods vehicles are stowed on the open deck aft, at least three metres from
accommodation openings, with the driver's keys handed to the chief officer.
""",
    "Animals on board": """## Pets

Dogs and cats travel free. They must stay in the owner's vehicle on the car deck or in the
pet area of the passenger lounge on a lead or in a carrier. Pets are not allowed in the
cafeteria.

## Assistance dogs

Registered assistance dogs may go anywhere a passenger may go, including the cafeteria.

## Livestock

Livestock travels in approved trailers. The haulier supplies the animal transport
certificate at check-in; trailers are stowed where the crew can reach them with water.
During crossings over 90 minutes a crew member checks the trailer halfway.
""",
    "Ticketing API for partners": """## Overview

Partners (tour operators and the island councils) book through the REST API at
`https://api.northsound.example/v2`. Every request carries the partner key in the
`X-Partner-Key` header. Requests are limited to 120 per minute per key; over the limit the
API answers 429 with a `Retry-After` header.

## Creating a booking

```python
import requests

resp = requests.post(
    "https://api.northsound.example/v2/bookings",
    headers={"X-Partner-Key": KEY},
    json={"sailing_id": "BRK-TRN-0715", "passengers": 3, "vehicles": [{"length_m": 4.6}]},
    timeout=10,
)
resp.raise_for_status()
print(resp.json()["reference"])
```

## Error codes

| Code | Meaning |
|---|---|
| 400 | malformed request; the body names the field |
| 401 | unknown or revoked partner key |
| 409 | the sailing is full for the requested vehicle length |
| 422 | the sailing has departed or been cancelled |
| 429 | rate limit exceeded |

## Webhooks

When a sailing is cancelled, the API posts a `sailing.cancelled` event to the partner's
webhook URL. Deliveries are retried for up to 24 hours with exponential backoff.
""",
    "Incident and near-miss reporting": """## What to report

Report every accident, injury, pollution event, damage and near miss, however small. A near
miss is an event that could have caused harm but did not.

## How and when

Fill in the incident form in the safety app within 24 hours. Anything involving serious
injury, pollution or a grounding is phoned to the Designated Person Ashore at once, day or
night, before the form.

## The Designated Person Ashore

The DPA is Hamish Ritchie; the deputy is Kirsty Flett. The DPA has direct access to the
managing director and is independent of the operations line.

## Investigation

The master investigates minor incidents. The DPA leads investigations of anything
reportable to the Marine Accident Investigation Branch.
""",
    "Bunkering procedure": """## Before transfer

- Agree the quantity and the maximum pumping rate with the road tanker driver.
- Sound the receiving tanks and record the ullage.
- Plug the deck scuppers and place the spill kit at the manifold.
- Agree a stop signal; a radio check is made before starting.

## During transfer

The pumping rate starts slowly and never exceeds 20 cubic metres per hour. An engineer
watches the tank vents throughout. Stop at 90 percent of tank capacity.

## After transfer

Record the quantity received in the oil record book and keep the bunker delivery note on
board for three years. A sample of the fuel is sealed and kept for at least twelve months.
""",
    "Refunds and compensation": """## Cancelled sailings

When we cancel a sailing for any reason, customers may choose a full refund or a free
transfer to another sailing.

## Delays

For delays on arrival of more than 90 minutes caused by us, customers may claim 25 percent
of the fare; over three hours, 50 percent. Delays caused by weather or by instructions from
the coastguard do not earn compensation.

## How to claim

Claims are made through the website within three months of the sailing. Refunds go back to
the original payment card within 14 days.
""",
    "Accessibility on our ships and terminals": """## Before travelling

Tell us about any assistance you need at least 48 hours before sailing so we can reserve a
wheelchair space and brief the crew.

## On board

Every vessel except the MV Puffin has a lift between the car deck and the passenger
lounge. On the Puffin, passengers who cannot use stairs travel in their vehicle or in the
ground-floor lounge.

## At terminals

Ramps at all terminals meet a gradient of 1 in 12 or gentler. Hearing loops are fitted at
every ticket office.
""",
    "Lost property": """## Handing in

Items found on board go to the purser, who logs them and hands them to the terminal at the
end of the day. Valuables such as phones, wallets and jewellery are logged with a
photograph.

## Keeping and returning

Lost property is kept for three months at the Brackwater terminal office. Owners can
collect it in person or have it posted for a fee of £7.50. Unclaimed items are donated to
charity; phones and laptops are wiped and recycled.
""",
    "Onboard catering": """## Service

The cafeteria opens when boarding starts and hot food is served until 30 minutes before
arrival. Payment is by card or phone only.

## Allergens

Allergen information for every dish is in the folder at the till. Staff do not guess: if
the folder does not answer a question, the item is not sold to that customer.

## Stock

Stock is ordered every Thursday for delivery to Brackwater on Friday. Perishables are
recorded on the waste sheet at the end of each day.
""",
    "Winter timetable 2026-27": """## Brackwater - Port Ellis (Tarn)

| Departs Brackwater | Arrives Port Ellis | Days | Vessel |
|---|---|---|---|
| 07:15 | 08:25 | Mon-Sat | MV Shearwater |
| 11:30 | 12:40 | daily | MV Shearwater |
| 16:45 | 17:55 | daily | MV Shearwater |

## Brackwater - Skerray

| Departs Brackwater | Arrives Skerray | Days | Vessel |
|---|---|---|---|
| 08:00 | 08:50 | Mon-Fri | MV Kittiwake |
| 14:20 | 15:10 | daily | MV Kittiwake |

## Inter-island (Skerray - Holm Bay)

| Departs Skerray | Arrives Holm Bay | Days | Vessel |
|---|---|---|---|
| 09:30 | 09:55 | Mon, Wed, Fri | MV Puffin |
| 15:40 | 16:05 | Mon, Wed, Fri | MV Puffin |

The winter timetable runs from 26 October 2026 to 27 March 2027. MV Guillemot and MV
Fulmar are relief vessels and cover dry-dockings.
""",
    "Drills and musters": """## Frequency

- Abandon ship and fire drill: weekly, rotating between watches
- Man overboard drill: monthly
- Enclosed space entry drill: every two months
- Damage control drill: every three months

## Recording

Drills are entered in the official log book and in the safety app. A drill that is
abandoned because of weather counts only if rescheduled within seven days.

## Passengers

The safety announcement is made before departure on every sailing and repeated in Gaelic on
the Tarn route.
""",
}


def build() -> tuple[list[tuple[str, str]], list[dict]]:
    """(documents as (title, markdown), tasks) — deterministic."""
    rng = random.Random(SEED)
    docs = [vessel_page(rng, v) for v in VESSELS]
    docs += [terminal_page(rng, t) for t in TERMINALS]
    docs += [(title, _frame(rng, title, rng.choice(OWNERS), body))
             for title, body in PAGES.items()]
    return docs, TASKS


TASKS: list[dict] = [
    # -- title-only: near-duplicate pages, the entity only in the title
    {"text": "How many people is the Guillemot certified to carry in summer?",
     "tags": ["title-only"], "needs": ["195 passengers (summer)"], "doc": "MV Guillemot"},
    {"text": "Which yard built the Fulmar, and what year?", "tags": ["title-only", "multi-fact"],
     "needs": ["| Year built | 2005 |", "| Builder | Cochrane, Selby |"], "doc": "MV Fulmar"},
    {"text": "What's the call sign for Puffin?", "tags": ["title-only", "synonym"],
     "needs": ["| Radio call sign | MPFN2 |"]},
    {"text": "When does Shearwater go into dry dock each year?", "tags": ["title-only"],
     "needs": ["Annual dry-docking window: October"]},
    {"text": "Kittiwake's annual docking month?", "tags": ["title-only", "low-overlap"],
     "needs": ["Annual dry-docking window: January"]},
    {"text": "How often does the Fulmar's telemetry box report in?",
     "tags": ["title-only", "paraphrase"], "needs": ["vessel: mflm5"]},
    {"text": "What VHF channel should we call on approaching Skerray?", "tags": ["title-only"],
     "needs": ["listens on VHF channel 16"]},
    {"text": "Until when is the Holm Bay waiting room open on weekdays?",
     "tags": ["title-only"], "needs": ["| Monday to Friday | 06:45-19:45 | 06:45-19:45 |"]},
    {"text": "How early must cars be queued at Port Ellis before sailing?",
     "tags": ["title-only", "paraphrase"], "needs": ["at least 20 minutes before departure"],
     "doc": "Port Ellis"},
    {"text": "Where do I leave my car overnight at Brackwater and what does it cost?",
     "tags": ["title-only", "paraphrase"], "needs": ["overnight parking costs £6"]},
    {"text": "Which berth does the ferry use at Holm Bay?", "tags": ["title-only"],
     "needs": ["Vessels use linkspan 2"]},
    {"text": "What did an adult single to Tarn cost in 2025?", "tags": ["title-only"],
     "needs": ["| Adult | £8.90 |"]},
    {"text": "Current price for taking a car across to Tarn this season?",
     "tags": ["title-only", "paraphrase"], "needs": ["| Car up to 5 m | £38.00 |"]},
    {"text": "What discount did island residents get under the 2025 fares?",
     "tags": ["title-only", "synonym"], "needs": ["pay 50% of the adult fare"]},
    {"text": "Is there an evacuation slide on the Shearwater?",
     "tags": ["title-only", "synonym"], "needs": ["Marine evacuation system: yes"]},
    # -- paraphrase
    {"text": "Who has the final say on whether a ferry leaves in bad weather?",
     "tags": ["paraphrase"], "needs": ["The decision to sail, delay or cancel rests with the "
                                       "master."]},
    {"text": "How much time off must a deckhand get in a single day?",
     "tags": ["paraphrase"], "needs": ["at least 10 hours of rest in any 24-hour period"]},
    {"text": "How far in advance must a shipper tell us they are bringing hazardous cargo?",
     "tags": ["paraphrase", "synonym"], "needs": ["at least 24 hours before the sailing"]},
    {"text": "Can my dog come with me into the café on board?",
     "tags": ["paraphrase", "synonym"], "needs": ["Pets are not allowed in the\ncafeteria."]},
    {"text": "If the boat arrives two hours late because of us, what do I get back?",
     "tags": ["paraphrase"], "needs": ["may claim 25 percent\nof the fare"]},
    {"text": "How long do I have to put in a claim after my trip?",
     "tags": ["paraphrase"], "needs": ["within three months of the sailing"]},
    {"text": "How long will you hang on to a phone I left on the boat?",
     "tags": ["paraphrase"], "needs": ["kept for three months at the Brackwater terminal"]},
    {"text": "Can I pay cash for a sandwich on the crossing?",
     "tags": ["paraphrase", "low-overlap"], "needs": ["Payment is by card or phone only."]},
    {"text": "What's the fastest we may pump diesel into the tanks?",
     "tags": ["paraphrase", "synonym"], "needs": ["never exceeds 20 cubic metres per hour"]},
    {"text": "How full can the fuel tanks be filled during bunkering?",
     "tags": ["paraphrase"], "needs": ["Stop at 90 percent of tank capacity."]},
    {"text": "How often do the crews practise recovering someone who fell into the sea?",
     "tags": ["paraphrase", "low-overlap"], "needs": ["Man overboard drill: monthly"]},
    {"text": "What wave height makes the small ferry's master think twice?",
     "tags": ["paraphrase", "low-overlap"], "needs": ["| Puffin | 30 knots | 2.0 m |"]},
    {"text": "How many API calls can a tour operator make each minute?",
     "tags": ["paraphrase"], "needs": ["limited to 120 per minute per key"]},
    {"text": "Which HTTP status tells a partner the boat is sold out for their van?",
     "tags": ["paraphrase", "low-overlap"], "needs": ["| 409 | the sailing is full"]},
    {"text": "How long do we keep the bunker delivery note?", "tags": ["paraphrase"],
     "needs": ["board for three years"]},
    {"text": "How does a partner authenticate to the booking service?",
     "tags": ["paraphrase", "synonym"], "needs": ["`X-Partner-Key` header"]},
    # -- synonym / acronym
    {"text": "Who is the DPA?", "tags": ["synonym"], "needs": ["The DPA is Hamish Ritchie"]},
    {"text": "Who should I ring immediately if a ship runs aground?",
     "tags": ["synonym", "low-overlap"], "needs": ["phoned to the Designated Person Ashore "
                                                  "at once"]},
    {"text": "Do pensioners pay to travel on foot?", "tags": ["synonym"],
     "needs": ["aged 60 or over travel free as foot passengers"]},
    {"text": "What's the concession for islanders this year?", "tags": ["synonym"],
     "needs": ["pay 40% of the adult fare"]},
    {"text": "Can a guide dog go into the cafeteria?", "tags": ["synonym"],
     "needs": ["Registered assistance dogs may go anywhere"]},
    {"text": "Are gas bottles allowed on a busy passenger sailing?",
     "tags": ["synonym", "low-overlap"], "needs": ["at most 250 kg per sailing"]},
    {"text": "Which ferry has no elevator?", "tags": ["synonym"],
     "needs": ["Every vessel except the MV Puffin has a lift"]},
    {"text": "What slope do the terminal ramps have?", "tags": ["synonym"],
     "needs": ["gradient of 1 in 12"]},
    {"text": "How much is it to have lost items mailed to me?", "tags": ["synonym"],
     "needs": ["posted for a fee of £7.50"]},
    {"text": "Is there an induction loop at the ticket desk?", "tags": ["synonym"],
     "needs": ["Hearing loops are fitted"]},
    {"text": "How often is the smoke alarm system tested on board?",
     "tags": ["synonym"], "needs": ["Fire detection system: weekly test"]},
    # -- low overlap
    {"text": "A tour operator's integration got a 429. What should it do?",
     "tags": ["low-overlap"], "needs": ["`Retry-After` header"]},
    {"text": "Our partner missed a cancellation. How long would we have kept trying to "
             "tell their system?", "tags": ["low-overlap"],
     "needs": ["retried for up to 24 hours"]},
    {"text": "A driver arrives with fireworks for the gala. What happens?",
     "tags": ["low-overlap", "synonym"], "needs": ["only on dedicated freight sailings"]},
    {"text": "Where on the vessel does a tanker lorry with hazardous cargo park?",
     "tags": ["low-overlap"], "needs": ["stowed on the open deck aft"]},
    {"text": "I'm exhausted before my watch. Will I get in trouble for saying so?",
     "tags": ["low-overlap", "paraphrase"], "needs": ["No one is disciplined for reporting "
                                                      "fatigue."]},
    {"text": "Someone with a nut allergy asks what's in the soup and nobody knows.",
     "tags": ["low-overlap"], "needs": ["the item is not sold to that customer"]},
    {"text": "Farmer wants to ship sheep on a long crossing — what do the crew do en route?",
     "tags": ["low-overlap", "synonym"], "needs": ["a crew member checks the trailer "
                                                   "halfway"]},
    {"text": "After a storm, who goes first when boats run again?", "tags": ["low-overlap"],
     "needs": ["emergency services, livestock\nand perishable freight"]},
    {"text": "How do passengers hear that tomorrow's boat might not go?",
     "tags": ["low-overlap", "paraphrase"], "needs": ["sends a text message to booked "
                                                      "customers"]},
    {"text": "When does the Sunday crossing to Holm run in winter?",
     "tags": ["low-overlap"], "needs": ["| 09:30 | 09:55 | Mon, Wed, Fri | MV Puffin |"]},
    # -- multi-fact
    {"text": "Plan a winter day trip from Brackwater to Tarn: the first boat out and the "
             "last one back's departure from Brackwater, and the adult return fare.",
     "tags": ["multi-fact"], "needs": ["| 07:15 | 08:25 | Mon-Sat | MV Shearwater |",
                                       "| 16:45 | 17:55 | daily | MV Shearwater |",
                                       "| Adult | £9.40 |"]},
    {"text": "Which ship runs the morning Skerray service in winter, and what quirk should a "
             "new master on her know about?", "tags": ["multi-fact", "low-overlap"],
     "needs": ["| 08:00 | 08:50 | Mon-Fri | MV Kittiwake |",
               "the bow thruster trips its breaker"]},
    {"text": "A wheelchair user wants to take the inter-island boat; which vessel is it and "
             "can they reach the lounge?", "tags": ["multi-fact", "low-overlap"],
     "needs": ["| 09:30 | 09:55 | Mon, Wed, Fri | MV Puffin |",
               "Every vessel except the MV Puffin has a lift"]},
    {"text": "Compare the wind limits for the biggest and smallest ships in the fleet.",
     "tags": ["multi-fact", "low-overlap"],
     "needs": ["| Shearwater | 40 knots | 3.5 m |", "| Puffin | 30 knots | 2.0 m |"]},
    {"text": "Sailing cancelled by us: what can the customer choose, and how fast does the "
             "money come back?", "tags": ["multi-fact", "paraphrase"],
     "needs": ["a full refund or a free\ntransfer", "within 14 days"]},
    {"text": "Over a week, how much rest must crew get, and how are the hours recorded?",
     "tags": ["multi-fact", "paraphrase"],
     "needs": ["at least 77\nhours in any 7-day period", "recorded daily on the rest-hours "
                                                        "sheet"]},
    {"text": "Before we start fuelling, what goes at the manifold, and what do we record "
             "afterwards?", "tags": ["multi-fact"],
     "needs": ["place the spill kit at the manifold", "Record the quantity received in the "
                                                     "oil record book"]},
    {"text": "Who investigates a small incident, and who handles a case for the MAIB?",
     "tags": ["multi-fact", "synonym"],
     "needs": ["The master investigates minor incidents.", "The DPA leads investigations"]},
    {"text": "Radioactive consignment: who must approve it, and what details go on the "
             "declaration?", "tags": ["multi-fact", "synonym"],
     "needs": ["needs the Designated Person Ashore's written approval",
               "UN number, proper shipping name"]},
    {"text": "Motorbike and a 17-year-old with a Young Scot card to Skerray: what do they "
             "pay?", "tags": ["multi-fact"],
     "needs": ["| Motorcycle | £14.00 | £11.00 | £6.50 |", "Young Scot card holders aged 16 "
                                                          "to 21 pay half fare"]},
    {"text": "What are the engines on the Guillemot and how often is their oil changed?",
     "tags": ["multi-fact", "title-only"],
     "needs": ["| Main engines | two Caterpillar C32 diesels |",
               "Main engine oil and filters: every 500 running hours"]},
]
