"""Conformance: every recurrence example of RFC 5545 §3.8.5.3 with its published instances.

All examples are in America/New_York (the RFC's "US-Eastern"), which has DST changes inside several of them
(October 26, 1997 and April 5, 1998), so 9:00 AM stays 9:00 AM local on both sides.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from shared.timing.rrule import rrule_next

NEW_YORK = ZoneInfo("America/New_York")
ANCHOR = datetime(1990, 1, 1, tzinfo=UTC)  # never used: every example has its own DTSTART


def occurrences(block: str, limit: int) -> list[str]:
    """Up to ``limit`` occurrences as New York wall times, each asked for after the previous one."""
    text = "\n".join(line.strip() for line in block.strip().splitlines())
    found: list[str] = []
    current: datetime | None = datetime(1990, 1, 1, tzinfo=UTC)
    while current is not None and len(found) < limit:
        current = rrule_next(text, NEW_YORK, ANCHOR, current)
        if current is not None:
            found.append(current.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %Z"))
    return found


def days(year: int, month: int, *numbers: int | range, at: str = "09:00") -> list[str]:
    """Wall times on the given days of one month, with the zone abbreviation New York shows then."""
    result = []
    for number in numbers:
        for day in number if isinstance(number, range) else [number]:
            hour, minute = map(int, at.split(":"))
            moment = datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)
            result.append(moment.strftime("%Y-%m-%d %H:%M %Z"))
    return result


DT = "DTSTART;TZID=America/New_York:19970902T090000"

# (name, text, published instances, how many to ask for: len(instances) + 1 shows a finite rule ends)
EXAMPLES: list[tuple[str, str, list[str], int]] = [
    ("daily, 10 occurrences", f"{DT}\nRRULE:FREQ=DAILY;COUNT=10", days(1997, 9, range(2, 12)), 11),
    (
        "daily until December 24, 1997",
        f"{DT}\nRRULE:FREQ=DAILY;UNTIL=19971224T000000Z",
        days(1997, 9, range(2, 31))
        + days(1997, 10, range(1, 32))
        + days(1997, 11, range(1, 31))
        + days(1997, 12, range(1, 24)),
        200,
    ),
    (
        "every other day, forever",
        f"{DT}\nRRULE:FREQ=DAILY;INTERVAL=2",
        days(1997, 9, range(2, 31, 2))
        + days(1997, 10, range(2, 31, 2))
        + days(1997, 11, range(1, 30, 2))
        + days(1997, 12, 1, 3),
        47,
    ),
    (
        "every 10 days, 5 occurrences",
        f"{DT}\nRRULE:FREQ=DAILY;INTERVAL=10;COUNT=5",
        days(1997, 9, 2, 12, 22) + days(1997, 10, 2, 12),
        6,
    ),
    (
        "every day in January, for 3 years (YEARLY)",
        "DTSTART;TZID=America/New_York:19980101T090000\n"
        "RRULE:FREQ=YEARLY;UNTIL=20000131T140000Z;BYMONTH=1;BYDAY=SU,MO,TU,WE,TH,FR,SA",
        days(1998, 1, range(1, 32)) + days(1999, 1, range(1, 32)) + days(2000, 1, range(1, 32)),
        100,
    ),
    (
        "every day in January, for 3 years (DAILY)",
        "DTSTART;TZID=America/New_York:19980101T090000\nRRULE:FREQ=DAILY;UNTIL=20000131T140000Z;BYMONTH=1",
        days(1998, 1, range(1, 32)) + days(1999, 1, range(1, 32)) + days(2000, 1, range(1, 32)),
        100,
    ),
    (
        "weekly for 10 occurrences",
        f"{DT}\nRRULE:FREQ=WEEKLY;COUNT=10",
        days(1997, 9, 2, 9, 16, 23, 30) + days(1997, 10, 7, 14, 21, 28) + days(1997, 11, 4),
        11,
    ),
    (
        "weekly until December 24, 1997",
        f"{DT}\nRRULE:FREQ=WEEKLY;UNTIL=19971224T000000Z",
        days(1997, 9, 2, 9, 16, 23, 30)
        + days(1997, 10, 7, 14, 21, 28)
        + days(1997, 11, 4, 11, 18, 25)
        + days(1997, 12, 2, 9, 16, 23),
        30,
    ),
    (
        "every other week, forever",
        f"{DT}\nRRULE:FREQ=WEEKLY;INTERVAL=2;WKST=SU",
        days(1997, 9, 2, 16, 30)
        + days(1997, 10, 14, 28)
        + days(1997, 11, 11, 25)
        + days(1997, 12, 9, 23)
        + days(1998, 1, 6, 20)
        + days(1998, 2, 3, 17),
        13,
    ),
    (
        "weekly on Tuesday and Thursday for five weeks (UNTIL)",
        f"{DT}\nRRULE:FREQ=WEEKLY;UNTIL=19971007T000000Z;WKST=SU;BYDAY=TU,TH",
        days(1997, 9, 2, 4, 9, 11, 16, 18, 23, 25, 30) + days(1997, 10, 2),
        20,
    ),
    (
        "weekly on Tuesday and Thursday for five weeks (COUNT)",
        f"{DT}\nRRULE:FREQ=WEEKLY;COUNT=10;WKST=SU;BYDAY=TU,TH",
        days(1997, 9, 2, 4, 9, 11, 16, 18, 23, 25, 30) + days(1997, 10, 2),
        20,
    ),
    (
        "every other week on MO, WE, FR until December 24, 1997, from Monday September 1",
        "DTSTART;TZID=America/New_York:19970901T090000\n"
        "RRULE:FREQ=WEEKLY;INTERVAL=2;UNTIL=19971224T000000Z;WKST=SU;BYDAY=MO,WE,FR",
        days(1997, 9, 1, 3, 5, 15, 17, 19, 29)
        + days(1997, 10, 1, 3, 13, 15, 17, 27, 29, 31)
        + days(1997, 11, 10, 12, 14, 24, 26, 28)
        + days(1997, 12, 8, 10, 12, 22),
        40,
    ),
    (
        "every other week on Tuesday and Thursday, for 8 occurrences",
        f"{DT}\nRRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=8;WKST=SU;BYDAY=TU,TH",
        days(1997, 9, 2, 4, 16, 18, 30) + days(1997, 10, 2, 14, 16),
        9,
    ),
    (
        "monthly on the first Friday for 10 occurrences",
        "DTSTART;TZID=America/New_York:19970905T090000\nRRULE:FREQ=MONTHLY;COUNT=10;BYDAY=1FR",
        days(1997, 9, 5)
        + days(1997, 10, 3)
        + days(1997, 11, 7)
        + days(1997, 12, 5)
        + days(1998, 1, 2)
        + days(1998, 2, 6)
        + days(1998, 3, 6)
        + days(1998, 4, 3)
        + days(1998, 5, 1)
        + days(1998, 6, 5),
        11,
    ),
    (
        "monthly on the first Friday until December 24, 1997",
        "DTSTART;TZID=America/New_York:19970905T090000\nRRULE:FREQ=MONTHLY;UNTIL=19971224T000000Z;BYDAY=1FR",
        days(1997, 9, 5) + days(1997, 10, 3) + days(1997, 11, 7) + days(1997, 12, 5),
        5,
    ),
    (
        "every other month on the first and last Sunday, 10 occurrences",
        "DTSTART;TZID=America/New_York:19970907T090000\nRRULE:FREQ=MONTHLY;INTERVAL=2;COUNT=10;BYDAY=1SU,-1SU",
        days(1997, 9, 7, 28)
        + days(1997, 11, 2, 30)
        + days(1998, 1, 4, 25)
        + days(1998, 3, 1, 29)
        + days(1998, 5, 3, 31),
        11,
    ),
    (
        "monthly on the second-to-last Monday for 6 months",
        "DTSTART;TZID=America/New_York:19970922T090000\nRRULE:FREQ=MONTHLY;COUNT=6;BYDAY=-2MO",
        days(1997, 9, 22)
        + days(1997, 10, 20)
        + days(1997, 11, 17)
        + days(1997, 12, 22)
        + days(1998, 1, 19)
        + days(1998, 2, 16),
        7,
    ),
    (
        "monthly on the third-to-the-last day, forever",
        "DTSTART;TZID=America/New_York:19970928T090000\nRRULE:FREQ=MONTHLY;BYMONTHDAY=-3",
        days(1997, 9, 28)
        + days(1997, 10, 29)
        + days(1997, 11, 28)
        + days(1997, 12, 29)
        + days(1998, 1, 29)
        + days(1998, 2, 26),
        6,
    ),
    (
        "monthly on the 2nd and 15th for 10 occurrences",
        f"{DT}\nRRULE:FREQ=MONTHLY;COUNT=10;BYMONTHDAY=2,15",
        days(1997, 9, 2, 15)
        + days(1997, 10, 2, 15)
        + days(1997, 11, 2, 15)
        + days(1997, 12, 2, 15)
        + days(1998, 1, 2, 15),
        11,
    ),
    (
        "monthly on the first and last day for 10 occurrences",
        "DTSTART;TZID=America/New_York:19970930T090000\nRRULE:FREQ=MONTHLY;COUNT=10;BYMONTHDAY=1,-1",
        days(1997, 9, 30)
        + days(1997, 10, 1, 31)
        + days(1997, 11, 1, 30)
        + days(1997, 12, 1, 31)
        + days(1998, 1, 1, 31)
        + days(1998, 2, 1),
        11,
    ),
    (
        "every 18 months on the 10th thru 15th for 10 occurrences",
        "DTSTART;TZID=America/New_York:19970910T090000\n"
        "RRULE:FREQ=MONTHLY;INTERVAL=18;COUNT=10;BYMONTHDAY=10,11,12,13,14,15",
        days(1997, 9, range(10, 16)) + days(1999, 3, range(10, 14)),
        11,
    ),
    (
        "every Tuesday, every other month",
        f"{DT}\nRRULE:FREQ=MONTHLY;INTERVAL=2;BYDAY=TU",
        days(1997, 9, 2, 9, 16, 23, 30)
        + days(1997, 11, 4, 11, 18, 25)
        + days(1998, 1, 6, 13, 20, 27)
        + days(1998, 3, 3, 10, 17, 24, 31),
        18,
    ),
    (
        "yearly in June and July for 10 occurrences",
        "DTSTART;TZID=America/New_York:19970610T090000\nRRULE:FREQ=YEARLY;COUNT=10;BYMONTH=6,7",
        [wall for year in range(1997, 2002) for wall in days(year, 6, 10) + days(year, 7, 10)],
        11,
    ),
    (
        "every other year on January, February, and March for 10 occurrences",
        "DTSTART;TZID=America/New_York:19970310T090000\nRRULE:FREQ=YEARLY;INTERVAL=2;COUNT=10;BYMONTH=1,2,3",
        days(1997, 3, 10)
        + [wall for year in (1999, 2001, 2003) for month in (1, 2, 3) for wall in days(year, month, 10)],
        11,
    ),
    (
        "every third year on the 1st, 100th, and 200th day for 10 occurrences",
        "DTSTART;TZID=America/New_York:19970101T090000\nRRULE:FREQ=YEARLY;INTERVAL=3;COUNT=10;BYYEARDAY=1,100,200",
        days(1997, 1, 1)
        + days(1997, 4, 10)
        + days(1997, 7, 19)
        + days(2000, 1, 1)
        + days(2000, 4, 9)
        + days(2000, 7, 18)
        + days(2003, 1, 1)
        + days(2003, 4, 10)
        + days(2003, 7, 19)
        + days(2006, 1, 1),
        11,
    ),
    (
        "every 20th Monday of the year, forever",
        "DTSTART;TZID=America/New_York:19970519T090000\nRRULE:FREQ=YEARLY;BYDAY=20MO",
        days(1997, 5, 19) + days(1998, 5, 18) + days(1999, 5, 17),
        3,
    ),
    (
        "Monday of week number 20, forever",
        "DTSTART;TZID=America/New_York:19970512T090000\nRRULE:FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO",
        days(1997, 5, 12) + days(1998, 5, 11) + days(1999, 5, 17),
        3,
    ),
    (
        "every Thursday in March, forever",
        "DTSTART;TZID=America/New_York:19970313T090000\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=TH",
        days(1997, 3, 13, 20, 27) + days(1998, 3, 5, 12, 19, 26) + days(1999, 3, 4, 11, 18, 25),
        11,
    ),
    (
        "every Thursday, but only during June, July, and August, forever",
        "DTSTART;TZID=America/New_York:19970605T090000\nRRULE:FREQ=YEARLY;BYDAY=TH;BYMONTH=6,7,8",
        days(1997, 6, 5, 12, 19, 26)
        + days(1997, 7, 3, 10, 17, 24, 31)
        + days(1997, 8, 7, 14, 21, 28)
        + days(1998, 6, 4, 11, 18, 25)
        + days(1998, 7, 2, 9, 16, 23, 30)
        + days(1998, 8, 6, 13, 20, 27)
        + days(1999, 6, 3, 10, 17, 24)
        + days(1999, 7, 1, 8, 15, 22, 29)
        + days(1999, 8, 5, 12, 19, 26),
        39,
    ),
    (
        "every Friday the 13th, forever",
        f"{DT}\nEXDATE;TZID=America/New_York:19970902T090000\nRRULE:FREQ=MONTHLY;BYDAY=FR;BYMONTHDAY=13",
        days(1998, 2, 13) + days(1998, 3, 13) + days(1998, 11, 13) + days(1999, 8, 13) + days(2000, 10, 13),
        5,
    ),
    (
        "the first Saturday that follows the first Sunday of the month, forever",
        "DTSTART;TZID=America/New_York:19970913T090000\nRRULE:FREQ=MONTHLY;BYDAY=SA;BYMONTHDAY=7,8,9,10,11,12,13",
        days(1997, 9, 13)
        + days(1997, 10, 11)
        + days(1997, 11, 8)
        + days(1997, 12, 13)
        + days(1998, 1, 10)
        + days(1998, 2, 7)
        + days(1998, 3, 7)
        + days(1998, 4, 11)
        + days(1998, 5, 9)
        + days(1998, 6, 13),
        10,
    ),
    (
        "every 4 years, the first Tuesday after a Monday in November (U.S. Presidential Election day)",
        "DTSTART;TZID=America/New_York:19961105T090000\n"
        "RRULE:FREQ=YEARLY;INTERVAL=4;BYMONTH=11;BYDAY=TU;BYMONTHDAY=2,3,4,5,6,7,8",
        days(1996, 11, 5) + days(2000, 11, 7) + days(2004, 11, 2),
        3,
    ),
    (
        "the third instance of one of TU, WE, TH, for the next 3 months",
        "DTSTART;TZID=America/New_York:19970904T090000\nRRULE:FREQ=MONTHLY;COUNT=3;BYDAY=TU,WE,TH;BYSETPOS=3",
        days(1997, 9, 4) + days(1997, 10, 7) + days(1997, 11, 6),
        4,
    ),
    (
        "the second-to-last weekday of the month",
        "DTSTART;TZID=America/New_York:19970929T090000\nRRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-2",
        days(1997, 9, 29)
        + days(1997, 10, 30)
        + days(1997, 11, 27)
        + days(1997, 12, 30)
        + days(1998, 1, 29)
        + days(1998, 2, 26)
        + days(1998, 3, 30),
        7,
    ),
    (
        # The RFC lists 09:00, 12:00 and 15:00 EDT, but UNTIL=17:00Z is 13:00 EDT; by the UNTIL rule itself
        # ("the last instance is the UNTIL value if it is an instance") 15:00 EDT (19:00Z) is past the end.
        "every 3 hours from 9:00 AM to 5:00 PM on a specific day",
        f"{DT}\nRRULE:FREQ=HOURLY;INTERVAL=3;UNTIL=19970902T170000Z",
        days(1997, 9, 2, at="09:00") + days(1997, 9, 2, at="12:00"),
        5,
    ),
    (
        "every 15 minutes for 6 occurrences",
        f"{DT}\nRRULE:FREQ=MINUTELY;INTERVAL=15;COUNT=6",
        [w for at in ("09:00", "09:15", "09:30", "09:45", "10:00", "10:15") for w in days(1997, 9, 2, at=at)],
        7,
    ),
    (
        "every hour and a half for 4 occurrences",
        f"{DT}\nRRULE:FREQ=MINUTELY;INTERVAL=90;COUNT=4",
        [w for at in ("09:00", "10:30", "12:00", "13:30") for w in days(1997, 9, 2, at=at)],
        5,
    ),
    (
        "every 20 minutes from 9:00 AM to 4:40 PM every day (DAILY)",
        f"{DT}\nRRULE:FREQ=DAILY;BYHOUR=9,10,11,12,13,14,15,16;BYMINUTE=0,20,40",
        [w for day in (2, 3) for h in range(9, 17) for m in (0, 20, 40) for w in days(1997, 9, day, at=f"{h}:{m}")],
        48,
    ),
    (
        "every 20 minutes from 9:00 AM to 4:40 PM every day (MINUTELY)",
        f"{DT}\nRRULE:FREQ=MINUTELY;INTERVAL=20;BYHOUR=9,10,11,12,13,14,15,16",
        [w for day in (2, 3) for h in range(9, 17) for m in (0, 20, 40) for w in days(1997, 9, day, at=f"{h}:{m}")],
        48,
    ),
    (
        "WKST makes a difference (WKST=MO)",
        "DTSTART;TZID=America/New_York:19970805T090000\nRRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO",
        days(1997, 8, 5, 10, 19, 24),
        5,
    ),
    (
        "WKST makes a difference (WKST=SU)",
        "DTSTART;TZID=America/New_York:19970805T090000\nRRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU",
        days(1997, 8, 5, 17, 19, 31),
        5,
    ),
    (
        "an invalid date (February 30) is ignored",
        "DTSTART;TZID=America/New_York:20070115T090000\nRRULE:FREQ=MONTHLY;BYMONTHDAY=15,30;COUNT=5",
        days(2007, 1, 15, 30) + days(2007, 2, 15) + days(2007, 3, 15, 30),
        6,
    ),
]


@pytest.mark.parametrize(("text", "published", "limit"), [e[1:] for e in EXAMPLES], ids=[e[0] for e in EXAMPLES])
def test_rfc_5545_example(text: str, published: list[str], limit: int) -> None:
    assert occurrences(text, limit) == published


def test_the_suite_covers_every_published_example() -> None:
    # 38 examples in §3.8.5.3 (those given in two forms are tested in both).
    assert len(EXAMPLES) == 42
    assert sum(len(example[2]) for example in EXAMPLES) > 500
