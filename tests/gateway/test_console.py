"""The web console (`/console/`) in a real browser — Debian's Chromium driven by Playwright — against
a real `keyward serve` with the console compiled in: each role sees only its own views; an admin
creates a tenant and an app token, with which the chat streams an answer; a key admin disables and
enables the tenant's key (the chat fails with key_revoked meanwhile), rotates it and re-keys the
tenant; an auditor verifies the audit chain and, after one event is edited in the database, sees
the page name its position. Markup sent as a prompt stays text, the CSP is never violated, API
answers are not cached and the token stays in sessionStorage. The tests run in order and share
one gateway (the tenant made in the console is used by the tests after it).

Screenshots of every view go to `.build/console-screenshots/`; with KEYWARD_UPDATE_SCREENSHOT=1
the key view's also replaces `docs/console-keys.png`.
"""
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import Gateway

try:
    from playwright.sync_api import expect, sync_playwright
    PLAYWRIGHT_MISSING = None
except ImportError as e:  # CI installs it: a missing browser stack fails, never skips
    PLAYWRIGHT_MISSING = e

CHROMIUM = "/usr/bin/chromium"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHOTS = os.path.join(ROOT, ".build", "console-screenshots")
CANARY = "<img src=x onerror=window.__pwned=1>"
CSP = {"default-src": "'none'", "script-src": "'self'", "style-src": "'self'", "img-src": "'self' data:",
       "connect-src": "'self'", "font-src": "'self'", "base-uri": "'none'", "form-action": "'none'",
       "frame-ancestors": "'none'"}
VIEWS = {
    "admin": ["Dashboard", "Tenants", "Tokens", "Policies", "Upstreams"],
    "key-admin": ["Dashboard", "Keys", "Jobs"],
    "auditor": ["Dashboard", "Audit log", "Alerts"],
    "app": ["Dashboard", "Chat", "Stored completions", "Responses"],
}
VIEW_IDS = {"Dashboard": "dashboard", "Tenants": "tenants", "Tokens": "tokens", "Policies": "policies",
            "Upstreams": "upstreams", "Keys": "keys", "Jobs": "jobs", "Audit log": "audit", "Alerts": "alerts",
            "Chat": "chat", "Stored completions": "completions", "Responses": "responses"}
TIMEOUT_MS = 15_000


def parse_csp(header):
    return {d.split()[0]: " ".join(d.split()[1:]) for d in (p.strip() for p in header.split(";")) if d}


# MARK: fixtures


@pytest.fixture(scope="module")
def gw(upstream):
    """A gateway of this module's own: alerts low enough that a burst of 45 reads raises one."""
    workdir = tempfile.mkdtemp(prefix="keyward-console-")
    g = Gateway(upstream, workdir, config_extra={"alerts": {
        "window_seconds": 60, "minimum": 40, "ratio": 5, "ceiling": 100000, "baseline_windows": 5}})
    yield g
    g.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def browser_stack_missing():
    if PLAYWRIGHT_MISSING is not None:
        return f"the console tests need Playwright for Python (pip install playwright): {PLAYWRIGHT_MISSING}"
    if not os.access(CHROMIUM, os.X_OK):
        return f"the console tests need Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser():
    if browser_stack_missing():
        pytest.fail(browser_stack_missing())
    os.makedirs(SHOTS, exist_ok=True)
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def state():
    """What one test leaves for the next (the tenant and token made in the console)."""
    return {}


@pytest.fixture
def tabs(browser, gw):
    """Opens tabs on the console; when the test ends, checks that none saw a CSP violation, a
    script error, a dialog, a cacheable API answer, a request to `x` or the token in a URL."""
    opened = []

    def open_tab():
        tab = Tab(browser, gw)
        opened.append(tab)
        return tab
    yield open_tab
    for tab in opened:
        try:
            tab.check_clean()
        finally:
            tab.context.close()


class Tab:
    """One browser tab on the console, with what it logged, fetched and was answered recorded."""

    def __init__(self, browser, gw):
        self.gw = gw
        self.context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.console, self.violations, self.errors, self.dialogs = [], [], [], []
        self.requests, self.responses, self.tokens, self.pending = [], [], [], set()
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.page.on("request", self._request)
        self.page.on("requestfinished", lambda r: self.pending.discard(r))
        self.page.on("requestfailed", lambda r: self.pending.discard(r))
        self.page.on("response", lambda r: self.responses.append((r.request.method, r.url, r.status, r.headers)))
        # The page's own securitypolicyviolation events, reported here (bindings and init scripts
        # are the browser's, outside the page's CSP).
        self.context.expose_function("__keywardViolation", lambda v: self.violations.append(v))
        self.context.add_init_script("document.addEventListener('securitypolicyviolation', (e) => "
                                     "window.__keywardViolation(`${e.violatedDirective} blocked ${e.blockedURI} "
                                     "at ${e.sourceFile}:${e.lineNumber}`));")

    def _request(self, request):
        self.requests.append((request.method, request.url))
        self.pending.add(request)

    def _dialog(self, dialog):
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    # navigation

    def open(self):
        return self.page.goto(self.gw.url + "/console/")

    def sign_in(self, token):
        self.tokens.append(token)
        self.open()
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.locator("nav.sidebar")).to_be_visible()
        expect(self.page.locator("#view-dashboard h1")).to_have_text("Dashboard")

    def nav(self):
        return self.page.locator("nav.sidebar a").all_inner_texts()

    def view(self, label, shot=None):
        """Opens a view from the sidebar, waits until it has loaded and shows no error."""
        view_id = VIEW_IDS[label]
        self.page.locator("nav.sidebar").get_by_role("link", name=label, exact=True).click()
        section = self.page.locator(f"#view-{view_id}")
        expect(section.locator("h1")).to_be_visible()
        expect(section).not_to_have_attribute("aria-busy", "true")  # its first data are in
        self.settle()
        assert section.locator(".error").all_inner_texts() == [], view_id
        if shot:
            self.shot(shot)
        return section

    def settle(self, quiet_s=0.3):
        """Waits until no request of the page has been open for `quiet_s` (Playwright's
        networkidle is a page-load state: it says nothing about fetches made after the load)."""
        deadline, calm_since = time.time() + TIMEOUT_MS / 1000, None
        while time.time() < deadline:
            if self.pending:
                calm_since = None
            elif calm_since is None:
                calm_since = time.time()
            elif time.time() - calm_since >= quiet_s:
                return
            self.page.wait_for_timeout(50)
        raise AssertionError(f"requests still open: {[r.url for r in self.pending]}")

    def shot(self, name):
        path = os.path.join(SHOTS, f"{name}.png")
        self.page.screenshot(path=path)
        return path

    def confirm(self, expected_text, button):
        """Checks the open dialog's text and presses its action button."""
        dialog = self.page.locator("dialog[open]")
        expect(dialog).to_contain_text(expected_text)
        dialog.get_by_role("button", name=button).click()
        expect(self.page.locator("dialog")).to_have_count(0)

    def chat(self, text, model="mock-1"):
        """Sends one message in the chat view; returns the answer's element once it has settled."""
        self.page.locator("#chat-model").fill(model)
        self.page.get_by_label("Message").fill(text)
        self.page.get_by_role("button", name="Send").click()
        answer = self.page.locator(".transcript .msg-assistant").last
        expect(answer).to_have_attribute("data-state", re.compile("done|error"))
        return answer

    # what every test ends with

    def check_clean(self):
        csp_logs = [m for m in self.console if "Content Security Policy" in m or "Refused to" in m]
        assert not self.violations and not csp_logs, (self.violations, csp_logs)
        assert not self.errors, self.errors
        assert not self.dialogs, self.dialogs
        if not self.page.is_closed() and self.page.url.startswith(self.gw.url):
            # Belt and braces: the CSP would stop an inline handler anyway; that markup is never
            # parsed is shown by the <img> counts and the absence of any request to `x`.
            assert self.page.evaluate("typeof window.__pwned") == "undefined"
            assert self.page.evaluate("localStorage.length") == 0
        to_x = [url for _, url in self.requests if urllib.parse.urlsplit(url).path.rstrip("/").split("/")[-1] == "x"]
        assert not to_x, to_x
        for token in self.tokens:
            assert not [url for _, url in self.requests if token in url]
            assert token not in self.page.url
        api = [(m, url, status, h) for m, url, status, h in self.responses
               if urllib.parse.urlsplit(url).path.startswith(("/admin/", "/v1/"))]
        uncached = [(m, url, status, h.get("cache-control")) for m, url, status, h in api
                    if "no-store" not in (h.get("cache-control") or "")]
        assert not uncached, uncached


def db(g):
    return sqlite3.connect(f"{g.data}/keyward.sqlite3", timeout=10)


def acme(gw, state):
    """The tenant and app token the admin test made in the console (made here if it did not run)."""
    if "app_token" not in state:
        status, _, _ = gw.admin("GET", "/admin/v1/tenants/acme")
        state["app_token"] = gw.new_tenant("acme", store="always") if status == 404 else gw.app_token("acme")[0]
    return state["app_token"]


# MARK: roles


def test_playwright_and_chromium_are_installed():
    # CI installs both: without them the console is untested, which must not pass as a skip.
    assert browser_stack_missing() is None, browser_stack_missing()


def test_each_role_sees_only_its_own_views(tabs, gw):
    tokens = {"admin": gw.admin_token, "key-admin": gw.role_token("key-admin"),
              "auditor": gw.role_token("auditor"), "app": gw.new_tenant("roles")}
    every_view = set(VIEW_IDS.values())
    for role, token in tokens.items():
        tab = tabs()
        tab.sign_in(token)
        assert tab.nav() == VIEWS[role]
        expect(tab.page.locator(".topbar .who .pill")).to_have_text(role)
        assert tab.page.evaluate("sessionStorage.getItem('keyward.token')") == token
        # The dashboard: five charts drawn as SVG and the refusals table (or its empty line).
        charts = tab.page.locator("#view-dashboard figure.chart")
        expect(charts).to_have_count(5)
        expect(charts.locator("svg")).to_have_count(5)
        theirs = {VIEW_IDS[label] for label in VIEWS[role]}
        for label in VIEWS[role]:
            tab.view(label, shot=f"{role}-{VIEW_IDS[label]}")
        for other in every_view - theirs:
            assert tab.page.locator(f"#view-{other}, nav a[data-view='{other}']").count() == 0, (role, other)
            # Asked for by its address, another role's view is not shown either: the dashboard is.
            tab.page.evaluate(f"location.hash = '#/{other}'")
            # The router has handled the change once it rewrites the address to the dashboard's.
            expect(tab.page).to_have_url(re.compile(r"#/dashboard$"))
            expect(tab.page.locator("#view-dashboard")).to_be_visible()
            assert tab.page.locator(f"#view-{other}").count() == 0
        tab.page.get_by_role("button", name="Sign out").click()
        expect(tab.page.get_by_label("API token")).to_be_visible()
        assert tab.page.evaluate("sessionStorage.getItem('keyward.token')") is None
        assert tab.page.locator("nav.sidebar").count() == 0


# MARK: admin, then the app


def test_admin_creates_a_tenant_and_a_token_and_the_app_chats_with_a_streamed_answer(tabs, gw, state, upstream):
    admin = tabs()
    admin.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gw.url)
    admin.sign_in(gw.admin_token)
    admin.view("Tenants")
    admin.page.get_by_label("Name").fill("acme")
    admin.page.get_by_label("Store exchanges").select_option("always")
    admin.page.get_by_role("button", name="Create tenant").click()
    row = admin.page.locator("tr[data-tenant='acme']")
    expect(row).to_contain_text("local:acme")
    expect(admin.page.locator("#view-tenants .ok")).to_contain_text("Tenant acme created on key local:acme")
    status, listed, _ = gw.admin("GET", "/admin/v1/tenants")
    assert [t["key"] for t in listed["data"] if t["name"] == "acme"] == ["local:acme"]
    # Its settings, and a provider key of its own for the "mock" upstream (checked below, when
    # the chat's requests reach the provider with it).
    row.get_by_role("button", name="Settings of acme").click()
    admin.page.locator("dialog[open]").get_by_label("Retention (days)").fill("45")
    admin.confirm("Settings of acme", "Save")
    expect(row.locator("td[data-col='retention']")).to_have_text("45 days")
    row.get_by_role("button", name="Provider key of acme").click()
    dialog = admin.page.locator("dialog[open]")
    dialog.get_by_label("Upstream").select_option("mock")
    dialog.get_by_label("API key").fill(upstream.tenant_key)
    admin.confirm("never shown back", "Store key")
    expect(admin.page.locator("#view-tenants .ok")).to_have_text("Provider key of acme for mock stored.")
    assert upstream.tenant_key not in admin.page.content()

    admin.view("Tokens")
    admin.page.get_by_label("Role").select_option("app")
    admin.page.get_by_label("Tenant").select_option("acme")
    admin.page.get_by_role("button", name="Issue token").click()
    shown = admin.page.locator("#new-token")
    expect(shown).to_be_visible()
    token = shown.inner_text().strip()
    assert token and " " not in token
    expect(admin.page.locator(".once")).to_contain_text("will not be shown again")
    admin.page.get_by_role("button", name="Copy").click()
    expect(admin.page.locator(".once")).to_contain_text("Copied.")
    assert admin.page.evaluate("navigator.clipboard.readText()") == token
    token_id = re.search(r"tok_[A-Za-z0-9_-]+", admin.page.locator(".once h2").inner_text()).group(0)
    expect(admin.page.locator(f"tr[data-token='{token_id}']")).to_contain_text("acme")
    admin.shot("admin-new-token")
    admin.page.get_by_role("button", name="Done").click()
    expect(admin.page.locator("#new-token")).to_have_count(0)  # gone from the page once dismissed
    # Suspended and resumed from its row.
    token_row = admin.page.locator(f"tr[data-token='{token_id}']")
    token_row.get_by_role("button", name=f"Suspend {token_id}").click()
    expect(token_row.locator(".pill")).to_have_text("suspended")
    assert gw.request("GET", "/v1/models", token=token)[1]["error"]["code"] == "token_suspended"
    token_row.get_by_role("button", name=f"Resume {token_id}").click()
    expect(token_row.locator(".pill")).to_have_text("active")

    # A policy that the browser refuses is never sent.
    admin.view("Policies")
    editor = admin.page.get_by_label("Policy (JSON)")
    admin.page.get_by_label("Key").fill("local:acme")
    admin.page.get_by_role("button", name="Load").click()
    expect(editor).to_be_enabled()
    assert json.loads(editor.input_value())["grants"][0]["principals"] == ["tenant:acme"]
    editor.fill('{"grants": [{"principals": ["tenant:acme"], "purposes": ["training"]}]}')
    admin.page.get_by_role("button", name="Save policy").click()
    expect(admin.page.locator("#view-policies .error")).to_have_text(
        'invalid_policy: grant 1: purpose "training" is not one of inference, retrieval, export')
    assert not [url for method, url in admin.requests if method == "PUT" and url.endswith("/policy")]
    editor.fill('{"grants": [{"principals": ["tenant:acme"], "purposes": ["inference", "retrieval", "export"]}]}')
    admin.page.get_by_role("button", name="Save policy").click()
    expect(admin.page.locator("#view-policies .ok")).to_have_text("Policy of local:acme saved.")
    status, policy, _ = gw.admin("GET", "/admin/v1/keys/local%3Aacme/policy")
    assert status == 200 and policy["grants"][0]["purposes"] == ["inference", "retrieval", "export"], policy

    # The app signs in with the token read from the page and gets an answer as it streams.
    app = tabs()
    app.sign_in(token)
    assert app.nav() == VIEWS["app"]
    app.view("Chat")
    app.page.locator("#chat-model").fill("mock-drip")  # 0.4 s between words
    app.page.get_by_label("Message").fill("hello from the console")
    app.page.get_by_label("Message").press("Enter")
    answer = app.page.locator(".transcript .msg-assistant").last
    seen = []
    deadline = time.time() + 15
    while time.time() < deadline and answer.get_attribute("data-state") == "streaming":
        text = answer.locator(".text").inner_text()
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        time.sleep(0.05)
    final = "echo: hello from the console"
    expect(answer).to_have_attribute("data-state", "done")
    expect(answer.locator(".text")).to_have_text(final)
    partial = [t for t in seen if t != final]
    assert partial and all(final.startswith(t) for t in partial), seen  # words appeared one by one
    assert upstream.keys_seen()[-1] == f"Bearer {upstream.tenant_key}"  # the provider key set above
    app.shot("app-chat")
    # The next turn carries the conversation.
    answer = app.chat("and a second question")
    expect(answer.locator(".text")).to_have_text("echo: and a second question")
    sent = upstream.bodies("/v1/chat/completions")[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"] and sent[1]["content"] == final

    section = app.view("Stored completions")
    expect(section.locator(".notice")).to_contain_text("Reading a record is logged in the audit log")
    expect(section.locator("tbody tr")).to_have_count(2)
    expect(section.locator("tbody tr").first.locator(".answer")).to_have_text("echo: and a second question")
    state["app_token"] = token


# MARK: key admin


def test_key_admin_disables_the_tenants_key_and_the_chat_fails_until_it_is_enabled(tabs, gw, state, upstream):
    token = acme(gw, state)
    keys = tabs()
    keys.sign_in(gw.role_token("key-admin"))
    keys.view("Keys")
    row = keys.page.locator("tr[data-key='local:acme']")
    expect(row.locator(".pill")).to_have_text("enabled")
    expect(row).to_contain_text("acme")

    # Escape closes the dialog and changes nothing.
    row.locator("button[data-action='disable']").click()
    expect(keys.page.locator("dialog[open]")).to_contain_text("acme: every request and read will fail")
    keys.page.keyboard.press("Escape")
    expect(keys.page.locator("dialog")).to_have_count(0)
    expect(row.locator(".pill")).to_have_text("enabled")
    row.locator("button[data-action='disable']").click()
    keys.shot("key-admin-disable-dialog")
    keys.confirm("acme: every request and read will fail", "Disable key")
    expect(row.locator(".pill")).to_have_text("disabled")

    # A scheduled deletion asks for its waiting period and names it in the effect.
    gw.new_tenant("spare")
    keys.view("Jobs")
    keys.view("Keys")  # opened again: it lists the keys as they were when it was opened
    spare = keys.page.locator("tr[data-key='local:spare']")
    spare.locator("button[data-action='schedule-deletion']").click()
    keys.page.locator("dialog[open]").get_by_label("Days before deletion").fill("7")
    keys.confirm("spare: every request and read will fail; after 7 days the key and all data under it are gone for ever",
                 "Schedule deletion")
    expect(spare.locator(".pill")).to_have_text("pending deletion")
    status, described, _ = gw.as_role("key-admin", "GET", "/admin/v1/keys/local%3Aspare")
    assert status == 200 and 7 * 86400 - 60 < described["deletion_date"] - time.time() <= 7 * 86400, described
    expect(spare.locator("td[data-col='deletion']")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    shot = keys.shot("key-admin-keys")  # enabled, disabled and pending deletion side by side
    if os.environ.get("KEYWARD_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, os.path.join(ROOT, "docs", "console-keys.png"))
    spare.locator("button[data-action='cancel-deletion']").click()
    keys.confirm("spare: the deletion is called off; the key stays disabled until it is enabled", "Cancel deletion")
    expect(spare.locator(".pill")).to_have_text("disabled")

    app = tabs()
    app.sign_in(token)
    app.view("Chat")
    before = upstream.count
    answer = app.chat("are you there?")
    expect(answer).to_have_attribute("data-state", "error")
    expect(answer.locator(".error")).to_have_text(re.compile(r"^key_revoked: "))
    assert upstream.count == before  # refused before anything left for the provider
    app.shot("app-chat-key-revoked")

    row.locator("button[data-action='enable']").click()
    keys.confirm("acme: requests and reads work again", "Enable key")
    expect(row.locator(".pill")).to_have_text("enabled")
    answer = app.chat("back again")
    expect(answer).to_have_attribute("data-state", "done")
    expect(answer.locator(".text")).to_have_text("echo: back again")


def test_key_admin_rotates_the_key_and_watches_the_rekey_job_finish(tabs, gw, state):
    acme(gw, state)
    keys = tabs()
    keys.sign_in(gw.role_token("key-admin"))
    keys.view("Keys")
    row = keys.page.locator("tr[data-key='local:acme']")
    versions = row.locator("td[data-col='versions']")
    expect(versions).to_have_text("1")
    row.locator("button[data-action='rotate']").click()
    keys.confirm("new data keys use a new version; nothing is re-encrypted", "Rotate key")
    expect(versions).to_have_text("2")
    expect(row.locator(".pill")).to_have_text("enabled")

    keys.page.get_by_label("Tenant").select_option("acme")
    keys.page.get_by_label("Target key").fill("local:acme")
    keys.page.get_by_role("button", name="Start re-key…").click()
    keys.confirm("acme: new records use local:acme at once", "Start re-key")
    expect(keys.page).to_have_url(re.compile(r"#/jobs/job_"))
    job_id = keys.page.url.split("#/jobs/")[1]
    card = keys.page.locator(f".job[data-job='{job_id}']")
    expect(card).to_have_attribute("data-status", "done", timeout=60_000)
    status, job, _ = gw.as_role("key-admin", "GET", f"/admin/v1/jobs/{job_id}")
    assert status == 200 and job["status"] == "done" and job["to_key"] == "local:acme"
    with db(gw) as conn:
        records = conn.execute("SELECT count(*) FROM records WHERE tenant = 'acme'").fetchone()[0]
    assert job["records_total"] == records >= 4, (job, records)
    expect(card.locator(".job-records")).to_have_text(f"{records} / {records}")
    progress = card.locator("progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == str(records)
    expect(keys.page.locator(f"tr[data-job-row='{job_id}'] .pill")).to_have_text("done")
    keys.shot("key-admin-job")


# MARK: markup stays text


def test_a_prompt_holding_markup_is_shown_as_text_everywhere(tabs, gw, state):
    token = acme(gw, state)
    app = tabs()
    app.sign_in(token)
    app.view("Chat")
    answer = app.chat(CANARY)
    expect(answer).to_have_attribute("data-state", "done")
    expect(app.page.locator(".transcript .msg-user .text").last).to_have_text(CANARY)
    expect(answer.locator(".text")).to_have_text("echo: " + CANARY)
    # The same markup as a model name comes back inside an error message: text too.
    answer = app.chat("hello", model=CANARY)
    expect(answer.locator(".error")).to_contain_text("model_not_found: ")
    expect(answer.locator(".error")).to_contain_text(CANARY)
    assert app.page.locator("#main img").count() == 0

    section = app.view("Stored completions")
    row = section.locator("tbody tr").filter(has_text="echo: " + CANARY)
    expect(row.locator(".answer")).to_have_text("echo: " + CANARY)
    row.get_by_role("button", name="Open").click()
    detail = app.page.locator("#record-detail")
    expect(detail.locator(".msg-user .text")).to_have_text(CANARY)
    expect(detail.locator(".msg-assistant .text")).to_have_text("echo: " + CANARY)
    app.shot("app-completions")
    completion_id = row.get_attribute("data-id")
    row.get_by_role("button", name=f"Delete {completion_id}").click()
    app.confirm("deleted for ever", "Delete")
    expect(section.locator(f"tr[data-id='{completion_id}']")).to_have_count(0)
    assert gw.request("GET", f"/v1/chat/completions/{completion_id}", token=token)[0] == 404
    # A stored response (made through the API: the console has no Responses composer) likewise.
    status, created, _ = gw.request("POST", "/v1/responses", {"model": "resp-1", "input": CANARY}, token=token)
    assert status == 200, created
    section = app.view("Responses")
    row = section.locator(f"tr[data-id='{created['id']}']")
    expect(row.locator(".answer")).to_have_text("echo: " + CANARY)
    row.get_by_role("button", name="Open").click()
    expect(app.page.locator("#record-detail p.answer")).to_have_text("echo: " + CANARY)
    app.shot("app-responses")
    # Deleted from its row, as a completion is.
    row.get_by_role("button", name=f"Delete {created['id']}").click()
    app.confirm("deleted for ever", "Delete")
    expect(section.locator(f"tr[data-id='{created['id']}']")).to_have_count(0)
    assert gw.request("GET", f"/v1/responses/{created['id']}", token=token)[0] == 404
    assert app.page.locator("img").count() == 0
    assert app.page.evaluate("typeof window.__pwned") == "undefined"
    assert not app.dialogs
    assert not [url for _, url in app.requests if re.search(r"/x(\?|$)", url)]

    # In the audit log: a policy naming the markup as a model (a grant for nobody, beside acme's
    # own) is logged with the policy in its detail, which the auditor's table shows as text.
    status, policy, _ = gw.admin("GET", "/admin/v1/keys/local%3Aacme/policy")
    assert status == 200, policy
    marked = {"grants": policy["grants"] + [{"principals": ["tenant:nobody"], "purposes": ["inference"], "models": [CANARY]}]}
    status, body, _ = gw.admin("PUT", "/admin/v1/keys/local%3Aacme/policy", marked)
    assert status == 200, body
    auditor = tabs()
    auditor.sign_in(gw.role_token("auditor"))
    section = auditor.view("Audit log")
    section.get_by_label("Operation").fill("policy_change")
    section.get_by_role("button", name="Apply").click()
    auditor.settle()
    expect(section.locator("td .detail").filter(has_text=CANARY)).to_have_count(1)
    assert auditor.page.locator("#main img").count() == 0
    assert not [url for _, url in auditor.requests if re.search(r"/x(\?|$)", url)]


# MARK: the page's own guarantees


def test_csp_no_store_and_where_the_token_is_kept(tabs, gw):
    tab = tabs()
    response = tab.open()
    assert parse_csp(response.headers["content-security-policy"]) == CSP
    tab.settle()
    assets = [(url, h) for _, url, _, h in tab.responses if "/console/" in url]
    assert {urllib.parse.urlsplit(u).path for u, _ in assets} >= {"/console/", "/console/app.js", "/console/console.css"}
    assert all(parse_csp(h.get("content-security-policy", "")) == CSP for _, h in assets), assets
    req = urllib.request.Request(gw.url + "/console", method="GET")
    opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                                              {"redirect_request": lambda *a, **k: None}))
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(req, timeout=10)
    assert e.value.code in (301, 302, 307, 308) and e.value.headers["location"] == "/console/"

    # The violation watch works: an inline script added by hand is refused and reported.
    tab.page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
                      " document.body.append(s); }")
    deadline = time.time() + 5
    while not tab.violations and time.time() < deadline:
        tab.page.wait_for_timeout(50)
    assert tab.violations and "script-src" in tab.violations[0], tab.violations
    assert tab.page.evaluate("typeof window.__inline") == "undefined"
    tab.page.wait_for_timeout(200)  # the console's line about it too
    tab.violations.clear()
    tab.console[:] = [m for m in tab.console if "Content Security Policy" not in m and "Refused to" not in m]

    # A wrong token: the API's error is shown, nothing is kept.
    tab.page.get_by_label("API token").fill("kw_not_a_token")
    tab.page.get_by_role("button", name="Sign in").click()
    expect(tab.page.locator(".signin .error")).to_have_text(re.compile(r"^invalid_api_key: "))
    assert tab.page.evaluate("sessionStorage.length") == 0

    tab.sign_in(gw.admin_token)
    # The dashboard counts what the tests before did: requests, and the key_revoked refusal.
    dashboard = tab.page.locator("#view-dashboard")
    expect(dashboard).not_to_have_attribute("aria-busy", "true")
    _, numbers, _ = gw.admin("GET", "/admin/v1/dashboard")
    assert numbers["refusals_by_code"].get("key_revoked", 0) >= 1, numbers["refusals_by_code"]
    expect(dashboard.locator("tr").filter(has_text="key_revoked")).to_have_count(1)
    expect(dashboard.locator("figure.chart").first.locator("figcaption")).to_contain_text(re.compile(r"[1-9]\d* requests"))
    assert dashboard.locator("figure.chart").first.locator("polyline, circle").count() >= 1
    tab.shot("admin-dashboard-after")
    assert tab.page.evaluate("sessionStorage.getItem('keyward.token')") == gw.admin_token
    assert tab.page.evaluate("localStorage.length") == 0
    assert gw.admin_token not in tab.page.url
    tab.view("Tokens")
    tab.page.reload()  # the session outlives a reload of the tab
    expect(tab.page.locator("#view-tokens h1")).to_be_visible()
    tab.settle()
    api = [(url, status, h) for _, url, status, h in tab.responses if "/admin/v1/" in url]
    assert any(status == 401 for _, status, _ in api) and len(api) >= 4
    assert all("no-store" in h.get("cache-control", "") for _, _, h in api), api
    tab.page.get_by_role("button", name="Sign out").click()
    assert tab.page.evaluate("sessionStorage.length") == 0
    assert "#" not in tab.page.url


# MARK: auditor


def test_auditor_sees_an_alert_with_the_events_before_it(tabs, gw):
    token = gw.new_tenant("burst")
    status, created, _ = gw.request("POST", "/v1/chat/completions", {
        "model": "keyward/echo", "messages": [{"role": "user", "content": "read me many times"}]}, token=token)
    assert status == 200, created
    for _ in range(45):  # a burst of reads, well above the alert's minimum of 40
        status, body, _ = gw.request("GET", f"/v1/chat/completions/{created['id']}", token=token)
        if status != 200:
            break
    deadline = time.time() + 10
    found = []
    while not found and time.time() < deadline:
        _, page, _ = gw.as_role("auditor", "GET", "/admin/v1/audit?operation=alert")
        found = [e for e in page["data"] if e.get("key") == "local:burst" or e.get("tenant") == "burst"]
        time.sleep(0.2)
    assert found, "no alert was raised"
    alert = found[-1]

    tab = tabs()
    tab.sign_in(gw.role_token("auditor"))
    tab.view("Alerts")
    card = tab.page.locator(f"article.alert[data-seq='{alert['seq']}']")
    expect(card).to_contain_text(alert["actor"])
    expect(card).to_contain_text("local:burst")
    card.get_by_role("button", name="Show its events").click()
    rows = card.locator("tbody tr")
    expect(rows.first).to_be_visible()
    keys = card.locator("tbody td[data-col='key']").all_inner_texts()
    assert len(keys) >= 40 and set(keys) == {"local:burst"}, keys
    tab.shot("auditor-alerts")


def test_auditor_verifies_the_chain_and_is_told_where_it_was_edited(tabs, gw, state):
    acme(gw, state)
    tab = tabs()
    tab.sign_in(gw.role_token("auditor"))
    section = tab.view("Audit log")
    with db(gw) as conn:
        head_before = conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    section.get_by_role("button", name="Verify chain").click()
    verdict = tab.page.locator("#verify-result")
    expect(verdict).to_contain_text("Intact: ")
    events = int(re.search(r"Intact: (\d+) events", verdict.inner_text()).group(1))
    with db(gw) as conn:
        head_after = conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    assert head_before <= events <= head_after, (head_before, events, head_after)

    # Filter by tenant, then export what the filter shows.
    tab.page.get_by_label("Tenant").fill("acme")
    tab.page.get_by_role("button", name="Apply").click()
    tab.settle()
    tenants = section.locator("tbody td[data-col='tenant']").all_inner_texts()
    assert tenants and set(tenants) == {"acme"}, tenants
    with tab.page.expect_download() as download:
        section.get_by_role("button", name="Export JSON lines").click()
    with open(download.value.path()) as f:
        exported = [json.loads(line) for line in f]
    assert [e["seq"] for e in exported][:len(tenants)] == [int(s.lstrip("#").split()[0]) for s in
                                                        section.locator("tbody td[data-col='position']").all_inner_texts()]
    assert {e["tenant"] for e in exported} == {"acme"}
    tab.shot("auditor-audit")

    # One event edited behind Keyward's back: the page names its position.
    edited = head_before // 2
    with db(gw) as conn:
        conn.execute("UPDATE audit_events SET detail = 'x' WHERE seq = ?", (edited,))
    section.get_by_role("button", name="Verify chain").click()
    expect(verdict).to_contain_text(re.compile(rf"Broken at position {edited}\b"))
    tab.shot("auditor-audit-broken")
    status, answer, _ = gw.as_role("auditor", "POST", "/admin/v1/audit/verify")
    assert status == 200 and answer["intact"] is False and answer["position"] == edited, answer
    verdict.get_by_role("button", name=f"Show position {edited}").click()
    row = section.locator(f"tr[data-seq='{edited}']")
    expect(row).to_have_class(re.compile(r"\bbroken\b"))
    expect(row.locator("td[data-col='detail']")).to_have_text("x")
    tab.shot("auditor-audit-broken-event")
