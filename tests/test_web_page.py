"""The web chat page (`/chat`) in headless Chromium, against real worker and gateway processes.

The browser is Debian's `chromium` with its `chromedriver` (`make browser` installs both;
`make test` depends on it), driven by Selenium with both paths given, so Selenium Manager
never looks for or downloads anything.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from temporalio.testing import WorkflowEnvironment

from activities.providers.scripted import tool_script
from tests.processes import ALICE_KEY, Gateway, new_session, poll_reply, serving, stack_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MAX_MESSAGE_CHARS = 500
T = TypeVar("T")


@pytest.fixture(scope="module")
def gateway(dev_env: WorkflowEnvironment) -> Iterator[Gateway]:
    environ = stack_env(
        dev_env,
        f"tq-web-{uuid.uuid4().hex[:8]}",
        tool_modules=["tests.tool_fixtures"],
        max_message_chars=MAX_MESSAGE_CHARS,
    )
    with serving(environ) as gw:
        yield gw


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium is not installed: run `make browser` (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


# ---- helpers ------------------------------------------------------------------------------


def wait_for(
    driver: WebDriver, condition: Callable[[WebDriver], T | None], seconds: float = 15
) -> T:
    result = WebDriverWait(driver, seconds, poll_frequency=0.05).until(condition)
    assert result is not None
    return result


def shown(driver: WebDriver, css: str, seconds: float = 15) -> WebElement:
    """The first element matching `css` once it is displayed."""

    def visible(d: WebDriver) -> WebElement | None:
        found = [e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
        return found[0] if found else None

    return wait_for(driver, visible, seconds)


def text_of(driver: WebDriver, css: str) -> str | None:
    """The text of the last element matching `css` (None: there is none)."""
    text: str | None = driver.execute_script(
        "const n = document.querySelectorAll(arguments[0]); "
        "return n.length ? n[n.length - 1].textContent : null;",
        css,
    )
    return text


def has_text(driver: WebDriver, css: str, expected: str, seconds: float = 15) -> str:
    """Waits until the last element matching `css` contains `expected`; returns its text."""

    def check(d: WebDriver) -> str | None:
        text = text_of(d, css)
        return text if text is not None and expected in text else None

    try:
        return wait_for(driver, check, seconds)
    except Exception as err:
        raise AssertionError(
            f"{css!r} never had {expected!r}; it has {text_of(driver, css)!r}"
        ) from err


def open_page(driver: WebDriver, gateway: Gateway, session_id: str | None = None) -> None:
    driver.get("about:blank")  # a full load even when only the #fragment differs
    driver.get(f"{gateway.url}/chat" + (f"#session={session_id}" if session_id else ""))


def sign_in(driver: WebDriver, gateway: Gateway, key: str = ALICE_KEY) -> None:
    open_page(driver, gateway)
    if shown(driver, "#api-key, #sign-out").get_attribute("id") == "sign-out":
        driver.find_element(By.ID, "sign-out").click()  # still signed in from a test before
    field = shown(driver, "#api-key")
    field.send_keys(key)
    driver.find_element(By.ID, "sign-in-button").click()


def start_session(driver: WebDriver, system_prompt: str = "", tools: tuple[str, ...] = ()) -> str:
    shown(driver, "#new-session-form")
    prompt = driver.find_element(By.ID, "system-prompt")
    prompt.clear()
    prompt.send_keys(system_prompt)
    for tool in tools:
        shown(driver, f'#tool-choices input[value="{tool}"]').click()
    driver.find_element(By.ID, "start-session").click()
    title = shown(driver, "#session-title")
    wait_for(driver, lambda d: title.text.strip())
    has_text(driver, "#session-usage", "tokens")
    return title.text.strip()


def send(driver: WebDriver, text: str) -> None:
    wait_for(driver, lambda d: d.find_element(By.ID, "send").is_enabled())
    box = driver.find_element(By.ID, "message-input")
    driver.execute_script("arguments[0].value = arguments[1];", box, text)
    driver.find_element(By.ID, "send").click()


LAST_REPLY = "#messages .msg.assistant .text"


def user_messages(driver: WebDriver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messages .msg.user .text")]


def script_errors(driver: Chrome) -> list[str]:
    """Console errors (a script error, a Content-Security-Policy violation) other than the
    HTTP statuses the tests cause on purpose."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [
        entry["message"]
        for entry in entries
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]


# ---- tests --------------------------------------------------------------------------------


async def test_the_page_is_served_with_a_strict_policy_outside_the_api(gateway: Gateway) -> None:
    client = gateway.client(None)
    root = await client.get("/")
    assert root.status_code == 307 and root.headers["location"] == "chat"
    page = await client.get("/chat")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "<script src=" in page.text and "<script>" not in page.text  # no inline script
    script = await client.get("/chat/static/chat.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text  # text only ever goes in through textContent
    assert (await client.get("/chat/static/..%2Fpage.py")).status_code == 404
    assert (await client.get("/chat/static/index.html")).status_code == 404
    assert (await client.get("/chat/links/abc")).status_code == 401
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/chat")]


def test_a_bad_key_gets_a_clear_message(browser: Chrome, gateway: Gateway) -> None:
    open_page(browser, gateway)
    assert browser.current_url.endswith("/chat")
    sign_in(browser, gateway, key="not-a-key")
    error = has_text(browser, "#sign-in-error", "not accepted")
    assert "unknown API key" in error
    assert not browser.find_element(By.ID, "app").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0
    assert "not-a-key" not in browser.current_url


def test_sign_in_chat_with_streaming_then_reload(browser: Chrome, gateway: Gateway) -> None:
    sign_in(browser, gateway)
    session_id = start_session(browser, system_prompt="Be brief.")
    link = browser.find_element(By.ID, "temporal-link")
    assert (link.get_attribute("href") or "").endswith(f"chat%3Aalice%3A{session_id}")
    assert link.get_attribute("target") == "_blank"
    has_text(browser, "#session-list", session_id)

    words = " ".join(f"w{i}" for i in range(12))
    send(browser, f"hello {words} [[tok_delay=0.08]]")
    final = f"echo: hello {words}"
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = text_of(browser, LAST_REPLY) or ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if text == final:
            break
        time.sleep(0.02)
    assert seen and seen[-1] == final, seen
    partial = [t for t in seen[:-1] if t]
    assert len(partial) >= 2, f"the reply never showed part way: {seen}"
    assert all(final.startswith(t) for t in partial), seen

    usage = has_text(browser, "#session-usage", "tokens")
    assert "prompt" in usage and "completion" in usage
    has_text(browser, "#messages .msg.assistant .meta", "tokens")
    assert browser.find_element(By.ID, "session-status").text in ("active", "working")

    assert user_messages(browser) == [f"hello {words} [[tok_delay=0.08]]"]

    browser.refresh()  # signed in still (the key is in sessionStorage), same session
    has_text(browser, "#messages .msg.user .text", f"hello {words}")
    assert has_text(browser, LAST_REPLY, final) == final
    assert browser.find_element(By.ID, "session-title").text == session_id
    assert user_messages(browser) == [f"hello {words} [[tok_delay=0.08]]"]
    assert ALICE_KEY not in browser.current_url
    assert script_errors(browser) == []


def test_errors_are_shown(browser: Chrome, gateway: Gateway) -> None:
    sign_in(browser, gateway)
    shown(browser, "#model").send_keys("no-such-model")
    browser.find_element(By.ID, "start-session").click()
    has_text(browser, "#banner-text", "The request was refused: model 'no-such-model'")
    browser.find_element(By.ID, "model").clear()
    start_session(browser)
    send(browser, "x" * (MAX_MESSAGE_CHARS + 1))  # refused by the gateway: nothing stored
    banner = has_text(browser, "#banner-text", "refused")
    assert f"{MAX_MESSAGE_CHARS}" in banner
    has_text(browser, "#messages .msg.user.not-sent", "Not sent")
    assert (browser.find_element(By.ID, "message-input").get_attribute("value") or "").startswith(
        "xxx"
    )

    send(browser, "boom [[fail=400]]")  # the model call fails: the turn says so
    has_text(browser, "#messages .turn-error", "The model call failed")
    send(browser, "still here?")  # and the session goes on
    has_text(browser, LAST_REPLY, "echo: still here?")
    assert script_errors(browser) == []


def test_tool_calls_are_approved_and_denied(browser: Chrome, gateway: Gateway) -> None:
    sign_in(browser, gateway)
    start_session(browser, tools=("send_note",))
    has_text(browser, "#session-tools", "send_note")

    send(browser, "note " + tool_script([("send_note", {"text": "ship it"})]))
    shown(browser, ".approval-controls .approve")
    has_text(browser, "#messages .tool-call .tool-name", "send_note")
    has_text(browser, "#messages .tool-call .tool-args", '"text": "ship it"')
    has_text(browser, "#session-status", "awaiting approval")
    shown(browser, ".approval-controls .approve").click()
    has_text(browser, "#messages .tool-result", "sent: ship it")
    has_text(browser, "#messages .decision", "Approved")
    has_text(browser, LAST_REPLY, "echo: note [tools: sent: ship it]")

    send(browser, "again " + tool_script([("send_note", {"text": "not this"})]))
    shown(browser, ".approval-controls .reason").send_keys("wrong team")
    shown(browser, ".approval-controls .deny").click()
    has_text(browser, "#messages .tool-result.is-error", "denied")
    has_text(browser, "#messages .decision", "Denied")
    has_text(browser, LAST_REPLY, "echo: again [tools: error:")

    # A call asked for before a reload still waits for its answer after it.
    send(browser, "later " + tool_script([("send_note", {"text": "after reload"})]))
    shown(browser, ".approval-controls .approve")
    browser.refresh()
    shown(browser, ".approval-controls .approve").click()
    has_text(browser, "#messages .tool-result", "sent: after reload")
    has_text(browser, LAST_REPLY, "echo: later [tools: sent: after reload]")
    assert len(user_messages(browser)) == 3
    assert script_errors(browser) == []


async def test_an_expired_session_says_so_and_resumes(browser: Chrome, gateway: Gateway) -> None:
    alice = gateway.client(ALICE_KEY)
    session_id = await new_session(alice, inactivity_timeout_seconds=1)
    sent = await alice.post(
        f"/v1/sessions/{session_id}/messages", json={"content": "first", "message_id": "m1"}
    )
    assert sent.status_code == 200, sent.text
    await wait_until_status(alice, session_id, "expired")

    sign_in(browser, gateway)
    shown(browser, "#app")
    open_page(browser, gateway, session_id)
    notice = has_text(browser, "#session-notice", "expired after 1 s without a message")
    assert "send a message to resume it" in notice
    has_text(browser, "#session-status", "expired")
    has_text(browser, LAST_REPLY, "echo: first")

    send(browser, "back again")
    has_text(browser, LAST_REPLY, "echo: back again")
    has_text(browser, "#session-notice", "Session resumed")
    wait_for(browser, lambda d: d.find_element(By.ID, "session-status").text != "expired")
    assert user_messages(browser) == ["first", "back again"]
    assert script_errors(browser) == []


async def test_export_as_json_and_markdown(
    browser: Chrome, gateway: Gateway, downloads: Path
) -> None:
    alice = gateway.client(ALICE_KEY)
    session_id = await new_session(alice, system_prompt="Export me.")
    for n, content in enumerate(["one `tick`", "two"]):
        response = await alice.post(
            f"/v1/sessions/{session_id}/messages",
            json={"content": content, "message_id": f"m{n}"},
            params={"wait": "false"},
        )
        await poll_reply(alice, response.json()["reply_url"])

    sign_in(browser, gateway)
    shown(browser, "#app")
    open_page(browser, gateway, session_id)
    has_text(browser, LAST_REPLY, "echo: two")
    shown(browser, "#export-json").click()
    shown(browser, "#export-md").click()

    exported = json.loads(downloaded(downloads / f"session-{session_id}.json").read_text())
    assert exported["session"]["session_id"] == session_id
    assert exported["temporal_ui_url"].endswith(f"chat%3Aalice%3A{session_id}")
    assert [m["content"] for m in exported["messages"]] == [
        "one `tick`",
        "echo: one `tick`",
        "two",
        "echo: two",
    ]
    markdown = downloaded(downloads / f"session-{session_id}.md").read_text()
    assert markdown.startswith(f"# Chat session {session_id}")
    assert "## System prompt\n\nExport me." in markdown
    assert "echo: one `tick`" in markdown and "tokens" in markdown
    assert script_errors(browser) == []


def downloaded(path: Path, seconds: float = 10) -> Path:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return path
        time.sleep(0.05)
    raise AssertionError(f"{path.name} was not downloaded")


async def wait_until_status(
    client: httpx.AsyncClient, session_id: str, wanted: str, seconds: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/sessions/{session_id}")
        if response.status_code == 200 and response.json()["status"] == wanted:
            body: dict[str, Any] = response.json()
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} never became {wanted}")
