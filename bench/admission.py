"""How good is admission's price? The device time it estimates for a request (from the
header, with the rates the worker measured) against the time the request then takes,
alone on an idle server, for a few sizes.

    python bench/admission.py --sides 64,128,256,512

runs the app in this process (the bundled model unless RESSHIFT_MODELS says otherwise,
embedded defaults), sends each size twice (the first warms the rates with real traffic)
and prints estimate, measured wall time and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.load import synthetic_png  # noqa: E402


def main(argv: Optional[list[str]] = None) -> int:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from service.validation import estimate_seconds

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", default="64,128,256,512")
    args = p.parse_args(argv)
    app = create_app(Settings())
    print(f"{'size':>10}{'estimate s':>12}{'measured s':>12}{'ratio':>8}")
    with TestClient(app) as client:
        end = time.monotonic() + 600
        while client.get("/readyz").status_code != 200:
            if time.monotonic() > end:
                raise SystemExit("not ready in 10 minutes")
            time.sleep(0.1)
        scheduler = app.state.services.scheduler
        for side in (int(s) for s in args.sides.split(",")):
            data = synthetic_png(side)
            for attempt in range(2):
                served = next(iter(scheduler.served.values()))
                estimate = estimate_seconds(served, side, side)
                start = time.monotonic()
                r = client.post("/v1/restore", files={"image": ("x.png", data)})
                took = time.monotonic() - start
                r.raise_for_status()
            print(f"{f'{side}x{side}':>10}{estimate:>12.2f}{took:>12.2f}{estimate / took:>8.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
