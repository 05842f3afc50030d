"""The baseline for bench/graphql_profile.py: a plain Starlette JSON endpoint for one profile.

It reads the same data the GraphQL `profile(id) { id traits identifiers { type value } }` query
returns, with the same functions (`get_profile`, `identifiers_of`) and the same engine settings,
so the difference between the two is what GraphQL, authentication, metrics and logging cost.

`GET /offers/{id}` does what a hand-written endpoint for `profile(id) { id traits
nextBestOffers(context: {channel: "web", placement: "home", limit: 3}) { id strategy offers {
offerId name rank score content } } }` would: read the profile, ask the process's decider (the
one GraphQL uses, `decider_for`) for a decision, and return the same JSON.

Run: python bench/plain_app.py --config cdp.toml --port 8001 [--inline]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cdp.config import load_config
from cdp.decisions.pipeline import DecisionContext, decider_for
from cdp.profiles import get_profile, identifiers_of
from cdp.runtime import Runtime


def create_app(runtime: Runtime, inline: bool = False) -> Starlette:
    """By default a sync endpoint: Starlette runs it in its threadpool, as cdp runs its database
    reads, so neither side blocks the event loop on SQLite/psycopg calls (one session and one
    thread hop per request). `inline` reads on the event loop instead: no thread hops, the
    fastest plain way on SQLite, a stricter baseline that no async server should copy."""

    def read(profile_id: str) -> JSONResponse:
        with runtime.sessions() as session:
            row = get_profile(session, profile_id)
            if row is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            found = identifiers_of(session, [row.id]).get(row.id, [])
            body = {
                "id": row.id,
                "traits": row.traits,
                "identifiers": [{"type": i.type, "value": i.value} for i in found],
            }
        return JSONResponse(body)

    offers_context = DecisionContext("web", "home", limit=3)

    def offers(profile_id: str) -> JSONResponse:
        with runtime.sessions() as session:
            row = get_profile(session, profile_id)
            if row is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            found_id, traits = row.id, row.traits
        decided = decider_for(runtime).decide(found_id, offers_context)
        return JSONResponse(
            {
                "id": found_id,
                "traits": traits,
                "nextBestOffers": {
                    "id": decided.id,
                    "strategy": decided.strategy,
                    "offers": [
                        {
                            "offerId": c.offer.id,
                            "name": c.offer.name,
                            "rank": c.rank,
                            "score": c.score,
                            "content": dict(c.content),
                        }
                        for c in decided.offers
                    ],
                },
            }
        )

    def threadpool(request: Request) -> JSONResponse:
        return read(request.path_params["id"])

    async def on_loop(request: Request) -> JSONResponse:
        return read(request.path_params["id"])

    def offers_threadpool(request: Request) -> JSONResponse:
        return offers(request.path_params["id"])

    async def offers_on_loop(request: Request) -> JSONResponse:
        return offers(request.path_params["id"])

    def healthz(request: Request) -> JSONResponse:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/profile/{id}", on_loop if inline else threadpool, methods=["GET"]),
            Route("/offers/{id}", offers_on_loop if inline else offers_threadpool, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def serve(config: Path, host: str, port: int, inline: bool) -> None:
    runtime = Runtime.start(load_config(config))
    # The same uvicorn settings as `cdp serve` (cdp.cli.server._serve); uvicorn's access log is
    # off there too (cdp writes its own, which this baseline leaves out on purpose).
    uvicorn.run(
        create_app(runtime, inline),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--inline", action="store_true", help="read on the event loop")
    args = parser.parse_args()
    serve(args.config, args.host, args.port, args.inline)
