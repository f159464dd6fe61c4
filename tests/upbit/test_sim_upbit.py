"""The local Upbit-shaped server answers in the real shape."""

from __future__ import annotations

import asyncio

import httpx
import orjson

from pumpwatch.recorder.sim.upbit import UpbitSim, backlog, krw_markets
from pumpwatch.timeunits import US_PER_S

NOW_US = 1_790_000_000_000_000  # 2026-09-21T14:13:20Z = 23:13:20 KST


def test_list_shape_order_edit_and_etag() -> None:
    async def main() -> None:
        sim = UpbitSim(notices=backlog(NOW_US), markets=krw_markets(["BTC", "CRV"], ["NEXO"]))
        async with sim, httpx.AsyncClient(base_url=sim.url) as client:
            new = sim.add_notice(
                "클러스터프로토콜(CP) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", at_us=NOW_US + 250_000
            )
            resp = await client.get(
                "/api/v1/announcements", params={"os": "web", "page": 1, "per_page": 3, "category": "trade"}
            )
            assert resp.status_code == 200
            doc = orjson.loads(resp.content)
            assert list(doc) == ["success", "data"] and doc["success"] is True
            data = doc["data"]
            assert list(data) == ["total_pages", "total_count", "notices", "fixed_notices"]
            assert (data["total_count"], data["total_pages"]) == (7, 3)  # the 입출금 notice is filtered out
            top = data["notices"][0]
            assert list(top) == [
                "listed_at",
                "first_listed_at",
                "id",
                "uuid",
                "title",
                "category",
                "need_new_badge",
                "need_update_badge",
            ]
            assert top["id"] == new.id and top["first_listed_at"] == "2026-09-21T23:13:20+09:00"
            assert top["listed_at"] == top["first_listed_at"] and top["need_new_badge"] is True

            old_id = data["notices"][2]["id"]
            sim.edit_notice(old_id, title="edited", at_us=NOW_US + 5 * US_PER_S)
            etag = resp.headers["etag"]
            resp2 = await client.get(
                "/api/v1/announcements",
                params={"per_page": 3, "category": "trade"},
                headers={"If-None-Match": etag},
            )
            assert resp2.status_code == 200 and resp2.headers["etag"] != etag
            top2 = orjson.loads(resp2.content)["data"]["notices"][0]
            assert (top2["id"], top2["title"], top2["listed_at"]) == (
                old_id,
                "edited",
                "2026-09-21T23:13:25+09:00",
            )
            assert top2["first_listed_at"] != top2["listed_at"]
            assert (top2["need_new_badge"], top2["need_update_badge"]) == (False, True)
            resp3 = await client.get(
                "/api/v1/announcements",
                params={"per_page": 3, "category": "trade"},
                headers={"If-None-Match": resp2.headers["etag"]},
            )
            assert resp3.status_code == 304 and resp3.content == b""

            page3 = orjson.loads(
                (
                    await client.get(
                        "/api/v1/announcements", params={"per_page": 3, "page": 3, "category": "trade"}
                    )
                ).content
            )
            assert len(page3["data"]["notices"]) == 1 and page3["data"]["fixed_notices"] == []

            markets = orjson.loads((await client.get("/v1/market/all")).content)
            assert markets == [
                {"market": "KRW-BTC", "korean_name": "BTC", "english_name": "BTC"},
                {"market": "KRW-CRV", "korean_name": "CRV", "english_name": "CRV"},
                {"market": "USDT-NEXO", "korean_name": "NEXO", "english_name": "NEXO"},
            ]
            detailed = orjson.loads(
                (await client.get("/v1/market/all", params={"is_details": "true"})).content
            )
            assert detailed[0]["market_event"]["warning"] is False
            assert (await client.get("/nope")).status_code == 404

    asyncio.run(main())


def test_faults_in_order() -> None:
    async def main() -> None:
        sim = UpbitSim(notices=backlog(NOW_US))
        async with sim, httpx.AsyncClient(base_url=sim.url) as client:
            sim.fail_next(2, status=429, retry_after_s=1.5)
            sim.garbage_next(1)
            statuses = []
            for _ in range(4):
                resp = await client.get("/api/v1/announcements")
                statuses.append((resp.status_code, resp.headers.get("retry-after")))
            assert statuses == [(429, "1.5"), (429, "1.5"), (200, None), (200, None)]
            assert sim.served == {429: 2, 200: 2}
            assert (
                await client.get("/api/v1/announcements", headers={"Origin": "https://upbit.com"})
            ).status_code == 403
            assert sim.requests[-1].headers["origin"] == "https://upbit.com"

    asyncio.run(main())
