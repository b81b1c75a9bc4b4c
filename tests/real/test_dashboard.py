"""The web dashboard end to end in headless Chromium (Debian's `chromium`, driven by
Playwright): log in with a token, see the cluster, stop an instance from its row and
see it stopped on the simulated host and in the page, watch an event arrive live.
Screenshots are saved under tests/artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest

from events.ids import InstanceName
from orchestrator.api.auth import ApiAuth, new_token_entry
from orchestrator.api.server import start_api
from orchestrator.roles import Role
from tests.support.cluster.cluster_harness import cluster, instances
from tests.support.tools import require_tool

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def test_dashboard_login_stop_and_live_events(tmp_path: Path) -> None:
    chromium = require_tool("/usr/bin/chromium", "chromium")
    playwright_api = pytest.importorskip("playwright.async_api")
    ARTIFACTS.mkdir(exist_ok=True)
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(4))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        token, entry = new_token_entry(name="alice", role=Role.OPERATOR)
        runner = await start_api(
            host="127.0.0.1",
            port=0,
            state=lambda: engine.state,
            store=c.store,
            auth=ApiAuth(entries=(entry,)),
            heartbeat_s=1.0,
        )
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/"
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                await page.goto(url)
                # A wrong token is refused in the page.
                await page.fill("#token", "corral_wrong")
                await page.click("#login-form button[type=submit]")
                await page.wait_for_selector("#login-error:has-text('refused')")
                await page.fill("#token", token)
                await page.click("#login-form button[type=submit]")
                await page.wait_for_selector("#nodes tbody tr >> nth=3")
                await page.wait_for_selector("#instances tbody tr >> nth=3")
                # esc() is used in attribute values too: quotes must be escaped.
                escaped = await page.evaluate("esc(`\"'><img src=x>&`)")
                assert escaped == "&quot;&#39;&gt;&lt;img src=x&gt;&amp;"
                assert await page.locator("#cluster-name").inner_text() == "lab"
                assert "4 running" in await page.locator("#summary").inner_text()
                overview = ARTIFACTS / "dashboard-overview.png"
                await page.screenshot(path=str(overview), full_page=True)

                # The node view: its details, and the instance list narrowed to it.
                await page.click("#nodes tr[data-node=node1]")
                await page.wait_for_selector("#node-detail:has-text('Node node1')")
                shown = await page.locator("#instances tbody tr").count()
                on_node1 = [
                    n
                    for n, p in engine.state.placements.items()
                    if "node1" in (p.primary, p.secondary)
                ]
                assert shown == len(on_node1)
                await page.fill("#filter", "")
                await page.dispatch_event("#filter", "input")

                victim = "vm001"
                assert c.running_on(victim)
                # The console button says where the console is and how to reach it.
                await page.click(f"button[data-console={victim}]")
                [primary] = c.running_on(victim)
                help_text = await page.inner_text("#console-help")
                assert f"corral instance console {victim}" in help_text, help_text
                assert primary in help_text, help_text
                await page.click(f"button[data-action=stop][data-name={victim}]")
                await c.wait_for("stopped on the host", lambda: c.running_on(victim) == [])
                await page.wait_for_selector(
                    f"tr[data-instance={victim}] td.status:has-text('ADMIN_down')", timeout=15000
                )
                assert engine.state.desired.instances[InstanceName(victim)].power.value == "stopped"

                # An event caused elsewhere (a person draining a node) arrives live.
                drained = await c.corral("node", "drain", "node4", identity="carol")
                assert drained.returncode == 0, drained.stderr
                await page.wait_for_selector("#events li:has-text('node.flags_set')", timeout=15000)
                after = ARTIFACTS / "dashboard-after-stop.png"
                await page.screenshot(path=str(after), full_page=True)
                await browser.close()
        finally:
            await runner.cleanup()
