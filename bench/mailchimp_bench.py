"""Mailchimp API calls per N members written, against the minimum ceil(N / 500).

Runs the real engine (SQLite store in a temporary folder) with a CSV newsletter import of N
people (documented double opt-in) and a write-only Mailchimp connection to the stateful fake
Mailchimp of the plugin's tests, and counts the requests that reach it:

1. first push of N new members with one audience tag: batch subscribe calls vs ceil(N / 500),
   tag calls (static segment, 500 members a call), and the reads a write needs (merge fields,
   the not-subscribed listings, the tag ids);
2. the same sync again, nothing changed: write calls (target 0);
3. a tenth of the people change their first name: write calls vs ceil(N / 10 / 500).

    .venv/bin/python bench/mailchimp_bench.py --records 1000 10000
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import respx  # noqa: E402

from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp  # noqa: E402
from synchub.config import load_config  # noqa: E402
from synchub.engine import Hub  # noqa: E402

KEY = "0123456789abcdef0123456789abcdef-us6"
CONFIG = """
store: 'sqlite:///{db}'
mappings_dir: ['{mappings}']
defaults: {{batch_size: 1000}}
connections:
  import:
    connector: files
    direction: in
    settings: {{path: data}}
    streams:
      audience: {{mapping: newsletter, settings: {{pattern: "newsletter*.csv", primary_key: Email Address}}}}
  mc:
    connector: mailchimp
    direction: out
    settings: {{api_key: "{key}"}}
    streams:
      newsletter: {{mapping: mailchimp_members_out, settings: {{list_id: bench, tags: [newsletter-de]}}}}
match:
  person: {{keys: [email]}}
"""
HEADER = "Email Address,First Name,Last Name,Language,Tags,Status,Opt-in Time,Last Changed\n"


def write_csv(path: Path, n: int, renamed: int = 0) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(HEADER)
        for i in range(n):
            first = f"Renamed{i}" if i < renamed else f"First{i}"
            f.write(f"p{i}@example.com,{first},Last{i},de,,subscribed,2025-01-01 10:00:00,2025-01-0{1 + (i < renamed)} 10:00:00\n")


def count(fake: FakeMailchimp, since: int) -> dict[str, int]:
    out = {"batch": 0, "tags": 0, "other writes": 0, "reads": 0}
    for r in fake.requests[since:]:
        if r.method == "GET":
            out["reads"] += 1
        elif r.method == "POST" and r.url.path.endswith("/lists/bench"):
            out["batch"] += 1
        elif r.method == "POST" and "/segments" in r.url.path:
            out["tags"] += 1
        else:
            out["other writes"] += 1
    return out


def run(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, respx.mock(assert_all_called=False) as mock:
        tmp_path = Path(tmp)
        (tmp_path / "data").mkdir()
        csv = tmp_path / "data" / "newsletter.csv"
        write_csv(csv, n)
        cfg = tmp_path / "synchub.yaml"
        cfg.write_text(CONFIG.format(db=tmp_path / "bench.db", mappings=ROOT / "mappings", key=KEY), encoding="utf-8")
        fake = FakeMailchimp(api_key=KEY)
        fake.add_list("bench", "Bench")
        mock.route(host="us6.api.mailchimp.com").mock(side_effect=fake.transport.handle_request)
        hub = Hub(load_config(cfg, environ={}))
        hub.store.upgrade()

        started, before = time.perf_counter(), len(fake.requests)
        hub.sync()
        first = count(fake, before)
        t_first = time.perf_counter() - started
        assert len(fake.members("bench")) == n, "not every member landed"
        minimum = math.ceil(n / 500)
        print(f"N={n:>6}: first push   batch calls {first['batch']:>4} (minimum {minimum}), tag calls {first['tags']:>4}, "
              f"other writes {first['other writes']}, reads {first['reads']}  [{t_first:.1f}s]")

        before = len(fake.requests)
        hub.sync()
        again = count(fake, before)
        print(f"N={n:>6}: unchanged    write calls {again['batch'] + again['tags'] + again['other writes']} (target 0), "
              f"reads {again['reads']}")

        changed = n // 10
        write_csv(csv, n, renamed=changed)
        before = len(fake.requests)
        hub.sync()
        third = count(fake, before)
        print(f"N={n:>6}: {changed} renamed batch calls {third['batch']:>4} (minimum {math.ceil(changed / 500)}), "
              f"tag calls {third['tags']}, other writes {third['other writes']}, reads {third['reads']}")
        assert fake.member("bench", "p0@example.com")["merge_fields"]["FNAME"] == "Renamed0"


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    for n in args.records:
        run(n)


if __name__ == "__main__":
    main()
