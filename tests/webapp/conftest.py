"""The web app in a real browser: Debian's headless Chromium driven by Playwright, over the
stack `make demo` leaves and `make up` serves (anvil with the demo's state, the indexer, the
API serving the built app, the inference node with the demo's model).

The wallet is ``injected_wallet.js``: an EIP-1193 provider forwarding to anvil, which signs
and sends for its unlocked accounts, so every signature and transaction is real. Every page a
test opens is watched for console errors and uncaught exceptions; a test fails on any.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_utils import to_checksum_address

from backend.devnet.anvil import free_port
from backend.devnet.stack import DEMO_ROLES

ROOT = Path(__file__).resolve().parents[2]
APE = str(Path(sys.executable).with_name("ape"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WALLET_JS = (Path(__file__).parent / "injected_wallet.js").read_text()
SCREENSHOTS = ROOT / "docs" / "screenshots"
REUSE_STATE = "OPENLEDGER_WEBAPP_TEST_STATE"  # a demo data dir to copy instead of running it
ANVIL_ACCOUNTS = 10  # anvil's unlocked accounts; the demo's roles are the first six


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def post_json(url: str, body: Any = None, timeout: float = 300) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body or {}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass(frozen=True)
class Stack:
    data_dir: Path
    rpc_url: str
    webapp_url: str  # http://127.0.0.1:<api port>/
    api_url: str  # .../api/v1
    node_url: str
    roles: dict[str, str]  # demo role -> address
    spare: list[str]  # anvil accounts no demo role uses (fresh wallets for the tests)

    def api(self, path: str) -> Any:
        return get_json(self.api_url + path)


def _wait_until_served(process: subprocess.Popen[str], api_port: int, node_url: str) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"`devnet up` exited with {process.returncode}: {out[-4000:]}")
        try:
            if get_json(f"{node_url}/health") and get_json(
                f"http://127.0.0.1:{api_port}/api/v1/status"
            ).get("events"):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("`devnet up` did not serve the API and the node in 240 s")


@pytest.fixture(scope="package")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A copy of a finished demo's state (the session's shared run), served by
    `ape run devnet up` as a newcomer gets it after `make demo`."""
    data_dir = tmp_path_factory.mktemp("webapp-devnet")
    # while developing: OPENLEDGER_WEBAPP_TEST_STATE names a finished demo's data dir to copy
    finished = os.environ.get(REUSE_STATE) or request.getfixturevalue("demo_run").data_dir
    shutil.copytree(finished, data_dir, dirs_exist_ok=True)
    port, api_port, node_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [APE, "run", "devnet", "up", "--data-dir", str(data_dir), "--port", str(port),
         "--api-port", str(api_port), "--node-port", str(node_port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    node_url = f"http://127.0.0.1:{node_port}"
    try:
        _wait_until_served(process, api_port, node_url)
        rpc_url = f"http://127.0.0.1:{port}"
        accounts = post_json(rpc_url, {"jsonrpc": "2.0", "id": 1, "method": "eth_accounts"})
        addresses = [to_checksum_address(a) for a in accounts["result"]]
        roles = dict(zip(DEMO_ROLES, addresses, strict=False))
        yield Stack(
            data_dir=data_dir,
            rpc_url=rpc_url,
            webapp_url=f"http://127.0.0.1:{api_port}/",
            api_url=f"http://127.0.0.1:{api_port}/api/v1",
            node_url=node_url,
            roles=roles,
            spare=addresses[len(DEMO_ROLES) : ANVIL_ACCOUNTS],
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:  # `make test` installs it first: missing means that failed
        pytest.fail("no chromium: `make browser` installs Debian's (as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        yield launched
        launched.close()


class Page:
    """A browser tab on the web app with the injected wallet, failing on console errors."""

    def __init__(self, browser: Any, stack: Stack, account: str | None, **wallet: Any) -> None:
        self.stack = stack
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.tab = self.context.new_page()
        self.errors: list[str] = []
        self.tab.on("console", self._on_console)
        self.tab.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        knobs = {"account": account, "rpcUrl": stack.rpc_url, "chainId": None, **wallet}
        if account is not None:
            self.tab.add_init_script(f"window.__wallet = {json.dumps(knobs)};\n{WALLET_JS}")

    def _on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        # Chromium logs every 4xx response as a console error. The node's 402 is x402's price
        # quote, the first half of every paid request (the page reads it and pays): expected.
        url = (message.location or {}).get("url", "")
        if "status of 402" in message.text and url.startswith(self.stack.node_url + "/v1/"):
            return
        self.errors.append(f"{message.text} ({url})")

    def open(self, route: str = "") -> Any:
        self.tab.goto(f"{self.stack.webapp_url}#/{route}")
        self.tab.wait_for_load_state("networkidle")
        self.settle()
        return self.tab

    def settle(self) -> None:
        """Waits until nothing on the page is loading."""
        self.tab.wait_for_function(
            "() => !document.querySelector('.loading') && document.querySelector('main')",
            timeout=30_000,
        )
        self.tab.wait_for_load_state("networkidle")

    def connect(self) -> None:
        self.tab.get_by_test_id("connect").click()
        self.tab.get_by_test_id("account").wait_for(timeout=15_000)

    def wallet_log(self) -> list[str]:
        return self.tab.evaluate("window.__wallet.log")

    def set_wallet(self, **knobs: Any) -> None:
        for name, value in knobs.items():
            self.tab.evaluate(f"window.__wallet[{json.dumps(name)}] = {json.dumps(value)}")

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # the sticky header would be drawn mid-page in a full-page capture
        self.tab.add_style_tag(content="header.top { position: static !important; }")
        self.tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors

    def close(self) -> None:
        self.context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page_factory(
    browser: Any, stack: Stack, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Any]:
    """``page_factory(account=None, **wallet knobs)``: a new tab; every one is checked for
    console errors when the test ends (and, when the test failed, its text and a screenshot
    are kept under the test's tmp_path and the text added to the report)."""
    opened: list[Page] = []

    def make(account: str | None = None, **wallet: Any) -> Page:
        page = Page(browser, stack, account, **wallet)
        opened.append(page)
        return page

    yield make
    if request.node.stash.get(FAILED, False):
        for i, page in enumerate(opened):
            page.tab.screenshot(path=str(tmp_path / f"failed-{i}.png"), full_page=True)
            text = page.tab.locator("body").inner_text()
            request.node.add_report_section(
                "teardown", f"tab {i}", f"console errors {page.errors}\n{text}"
            )
    try:
        for page in opened:
            page.assert_clean()
    finally:
        for page in opened:
            page.close()


@pytest.fixture(scope="package")
def chain(stack: Stack) -> Any:
    """The demo's deployment over web3 (what the tests read and check on-chain)."""
    from backend.protocol.deployments import DeploymentStore
    from backend.protocol.web3_protocol import Web3Protocol

    return Web3Protocol.connect(stack.rpc_url, DeploymentStore(stack.data_dir / "deployments.json"))
