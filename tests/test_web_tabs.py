"""``empsync web`` opens at most ``MAX_TABS`` consoles at once; a closed tab frees its place.

The server is the real one (its guard, textual-serve and aiohttp) on a free
loopback port, in this process; each tab's console is a stand-in process
that lives until its tab asks it to quit, so the test needs no service and
starts no Textual.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tui.web import MAX_TABS, ConsoleServer

from .notify_support import closed_port

STAND_IN = "head -c 1 > /dev/null"  # ends on the first byte textual-serve sends it: its "quit"


async def _connect_when_free(session: aiohttp.ClientSession, url: str, origin: str) -> aiohttp.ClientWebSocketResponse:
    """A tab, once a place is free: a closed tab's place is, once its console has quit."""
    for _ in range(200):
        try:
            return await session.ws_connect(url, origin=origin)
        except aiohttp.WSServerHandshakeError as refused:
            assert refused.status == 503
            await asyncio.sleep(0.05)
    raise AssertionError("a closed tab's place was not freed within 10 s")


async def test_tabs_beyond_max_tabs_get_a_503_page_until_one_is_closed():
    port = closed_port()
    server = ConsoleServer(STAND_IN, host="127.0.0.1", port=port)
    runner = web.AppRunner(await server._make_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url, origin = f"http://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            tabs = [await session.ws_connect(url, origin=origin) for _ in range(MAX_TABS)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url, origin=origin)
            assert refused.value.status == 503
            page = await session.get(url.replace("/ws", "/missing-page"), headers={"Origin": origin})
            assert page.status != 503, "only tabs are counted, not other requests"

            await tabs.pop().close()
            tabs.append(await _connect_when_free(session, url, origin))
            for tab in tabs:
                await tab.close()
    finally:
        await runner.cleanup()
