#!/usr/bin/env python3
"""test_server_browser.py: the chat page at / in a real browser (headless
Debian chromium through selenium), issue 5.

Loads /, sends a message (Enter), sees the reply arrive in several pieces
and equal what nanochat's protocol returns for the same greedy request,
presses Stop mid-reply (the server must cancel: no KV blocks left in use),
edits a message (click, change, resend), regenerates a reply, runs the
slash commands, checks that model/user text cannot inject HTML, that the
page fits a phone screen, and that calculator tool events are drawn as a
tool box rather than raw special tokens (from a recorded stream, then for
real with the bundled picochat model asked "What is 37*41?").

The server runs a random-weight model large enough to stream visibly on a
CPU (--random 4,512,4: ~60 ms a token here), with a 65536-entry tokenizer
built by tiktoken in a temp dir (byte tokens, letter pairs, and "wNNNNN "
words, so replies are readable). Skips (exit 77) only when chromium or
chromedriver is not installed (tools/install_deps.sh --test installs them).
"""
import json
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import ROOT, Checker, Server, make_big_tokenizer  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
PICOCHAT = os.path.join(ROOT, "models", "picochat")
# A fake stream replayed by a fetch() override, to check how the page draws
# tool events (a random model never calls the calculator).
TOOL_STREAM = [
    {"token": "Let me compute. ", "gpu": 0},
    {"token": "", "gpu": 0, "tool": {"type": "calculator", "state": "call", "expr": "37*41"}},
    {"token": "", "gpu": 0, "tool": {"type": "calculator", "state": "result", "expr": "37*41", "result": "1517"}},
    {"token": " The answer is 1517.", "gpu": 0},
    {"done": True},
]


def wait_for(cond, timeout=20, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return None


def main():
    if not CHROMIUM or not DRIVER:
        print("skipped: chromium / chromedriver not installed (tools/install_deps.sh --test)")
        return 77
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ck = Checker("test_server_browser")
    tmp = tempfile.mkdtemp(prefix="nc-browser-")
    tok = os.path.join(tmp, "tokenizer.pkl")
    make_big_tokenizer(tok)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        opts.add_argument(a)
    driver = None
    try:
        with Server("--tokenizer", tok, model=("--random", "4,512,4")) as srv:
            driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
            driver.set_page_load_timeout(30)
            driver.get(srv.base + "/")
            ck.check(driver.title == "nanochat", f"title {driver.title!r}")
            inp = driver.find_element(By.ID, "chatInput")
            js = driver.execute_script
            generating = lambda: js("return document.body.classList.contains('generating')")  # noqa: E731
            messages = lambda kind: driver.find_elements(By.CSS_SELECTOR, f"#chat .message.{kind} .content")  # noqa: E731

            def set_field(field, value):
                el = driver.find_element(By.ID, field)
                el.clear()
                el.send_keys(str(value))

            # 1. Send with Enter; the greedy reply streams in pieces and equals the protocol's answer.
            set_field("temperature", 0)
            set_field("maxTokens", 12)
            js("""window.__mut = 0; new MutationObserver(() => window.__mut++).observe(
                  document.getElementById('chat'), {subtree: true, characterData: true, childList: true});""")
            inp.send_keys("hello")
            inp.send_keys(Keys.ENTER)
            ck.check(wait_for(lambda: len(messages("user")) == 1), "user bubble")
            ck.check(messages("user")[0].text == "hello", f"user text {messages('user')[0].text!r}")
            ck.check(wait_for(lambda: generating(), timeout=5) or len(messages("assistant")) == 1, "generating")
            ck.check(wait_for(lambda: not generating(), timeout=30), "reply finished")
            reply = js("return document.querySelector('#chat .message.assistant .content').firstChild.textContent")
            status, body = srv.post("/chat/completions", {"messages": [{"role": "user", "content": "hello"}],
                                                          "temperature": 0, "top_k": 50, "max_tokens": 12})
            want = "".join(json.loads(line[6:]).get("token", "") for line in body.decode().split("\n\n")
                           if line.startswith("data: "))
            ck.check(reply == want and len(want) > 0, f"page reply {reply!r} != protocol {want!r}")
            ck.check(js("return window.__mut") >= 6, f"reply not streamed in pieces ({js('return window.__mut')} updates)")

            # 2. Stop mid-reply: the page stops, the server cancels and frees the KV blocks.
            set_field("maxTokens", 400)
            inp.send_keys("tell me more")
            inp.send_keys(Keys.ENTER)
            ck.check(wait_for(lambda: len(messages("assistant")) == 2 and len(messages("assistant")[1].text) > 30,
                              timeout=30), "second reply streaming")
            driver.find_element(By.ID, "stopButton").click()
            ck.check(wait_for(lambda: not generating(), timeout=5), "stopped")
            text1 = messages("assistant")[1].text
            time.sleep(0.5)
            ck.check(messages("assistant")[1].text == text1 and "stopped" in text1, f"after stop: {text1[-40:]!r}")
            m = wait_for(lambda: (lambda m: m if m["nanochat_running_requests"] == 0 and
                                  m["nanochat_kv_blocks_used"] == 0 else None)(srv.metrics()), timeout=5)
            ck.check(m is not None, "server did not cancel the stopped request")

            # 3. Edit: clicking a user message puts it back in the box and cuts the conversation there.
            set_field("maxTokens", 6)
            messages("user")[0].click()
            ck.check(inp.get_attribute("value") == "hello", f"edit box {inp.get_attribute('value')!r}")
            ck.check(len(driver.find_elements(By.CSS_SELECTOR, "#chat .message")) == 0, "conversation cut at the edit")
            inp.send_keys(" again")
            inp.send_keys(Keys.ENTER)
            ck.check(wait_for(lambda: not generating() and len(messages("assistant")) == 1, timeout=30), "edited reply")
            ck.check([e.text for e in messages("user")] == ["hello again"], "edited message sent")
            first = js("return document.querySelector('#chat .message.assistant .content').firstChild.textContent")

            # 4. Regenerate: clicking a reply replaces it (greedy: the same text).
            messages("assistant")[0].click()
            ck.check(wait_for(lambda: not generating() and len(messages("assistant")) == 1, timeout=30), "regenerated")
            again = js("return document.querySelector('#chat .message.assistant .content').firstChild.textContent")
            ck.check(again == first and len(driver.find_elements(By.CSS_SELECTOR, "#chat .message")) == 2,
                     f"regenerate: {again!r} vs {first!r}")

            # 5. Slash commands.
            for cmd in ("/temperature 0.5", "/topk 7", "/maxtokens 9", "/help"):
                inp.send_keys(cmd)
                inp.send_keys(Keys.ENTER)
            ck.check(driver.find_element(By.ID, "temperature").get_attribute("value") == "0.5", "/temperature")
            ck.check(driver.find_element(By.ID, "topk").get_attribute("value") == "7", "/topk")
            ck.check(driver.find_element(By.ID, "maxTokens").get_attribute("value") == "9", "/maxtokens")
            consoles = driver.find_elements(By.CSS_SELECTOR, "#chat .message.console")
            ck.check(len(consoles) == 4 and "/clear" in consoles[-1].text, "console messages")
            inp.send_keys("/clear")
            inp.send_keys(Keys.ENTER)
            ck.check(len(driver.find_elements(By.CSS_SELECTOR, "#chat .message")) == 0, "/clear")

            # 6. No HTML injection from user text.
            inp.send_keys("<img src=x onerror=window.__xss=1><b>bold</b>")
            inp.send_keys(Keys.ENTER)
            ck.check(wait_for(lambda: not generating() and len(messages("assistant")) == 1, timeout=30), "xss reply")
            ck.check(js("return document.querySelectorAll('#chat img, #chat b').length") == 0, "HTML was injected")
            ck.check(js("return window.__xss === undefined"), "script ran")
            ck.check(messages("user")[0].text.startswith("<img"), "markup shown as text")

            # 7. Tool events are drawn as a tool box (fetch replays a recorded stream).
            js("""const events = arguments[0];
                  window.fetch = async () => new Response(new ReadableStream({start(c) {
                      const enc = new TextEncoder();
                      for (const e of events) c.enqueue(enc.encode('data: ' + JSON.stringify(e) + '\\n\\n'));
                      c.close(); }}), {status: 200, headers: {'Content-Type': 'text/event-stream'}});""",
               TOOL_STREAM)
            inp.send_keys("what is 37*41?")
            inp.send_keys(Keys.ENTER)
            ck.check(wait_for(lambda: not generating() and len(messages("assistant")) == 2, timeout=10), "tool reply")
            tools = driver.find_elements(By.CSS_SELECTOR, "#chat .message.assistant .tool")
            ck.check(len(tools) == 1, f"{len(tools)} tool boxes")
            if tools:
                ck.check(tools[0].find_element(By.CSS_SELECTOR, ".tool-expr").text == "37*41" and
                         tools[0].find_element(By.CSS_SELECTOR, ".tool-result").text == "1517", f"tool box {tools[0].text!r}")
            text = messages("assistant")[1].text
            ck.check("Let me compute." in text and "The answer is 1517." in text and "<|" not in text, f"tool text {text!r}")

            # 7b. Every turn of a conversation carries the same X-Session-Id (the
            # load balancer's affinity key, docs/deploy.md); a new chat gets a new one.
            js("""window.__sids = []; const replay = window.fetch;
                  window.fetch = (url, opts) => { window.__sids.push(opts.headers['X-Session-Id']);
                                                  return replay(url, opts); };""")
            for text in ("first turn", "second turn", "/clear", "new chat"):
                inp.send_keys(text)
                inp.send_keys(Keys.ENTER)
                wait_for(lambda: not generating(), timeout=10)
            sids = js("return window.__sids")
            ck.check(len(sids) == 3 and all(isinstance(x, str) and re.fullmatch(r"[0-9a-f]{32}", x) for x in sids)
                     and sids[0] == sids[1] and sids[2] != sids[0], f"session ids {sids}")

            # 7c. A stream that ends without its final event is reported as cut
            # off, not shown as a complete reply.
            js("""window.fetch = async () => new Response(new ReadableStream({start(c) {
                      c.enqueue(new TextEncoder().encode('data: {"token": "half a rep", "gpu": 0}\\n\\n'));
                      c.close(); }}), {status: 200, headers: {'Content-Type': 'text/event-stream'}});""")
            inp.send_keys("cut me off")
            inp.send_keys(Keys.ENTER)
            wait_for(lambda: not generating(), timeout=10)
            errors = driver.find_elements(By.CSS_SELECTOR, "#chat .message.error .content")
            ck.check(errors and "before the reply was complete" in errors[-1].text, f"cut stream: {[e.text for e in errors]}")

            # 8. A phone screen: nothing overflows sideways, the input stays usable.
            driver.set_window_size(375, 740)
            time.sleep(0.3)
            width = js("return document.documentElement.scrollWidth")
            view = js("return window.innerWidth")
            ck.check(width <= view + 1, f"page {width}px wide in a {view}px viewport")
            ck.check(inp.is_displayed() and driver.find_element(By.ID, "sendButton").is_displayed(), "input visible")
            ck.check(srv.alive(), "server alive")

        # 9. The bundled chat model calls the calculator for real: the page shows a tool box.
        with Server(model=("-m", PICOCHAT)) as srv:
            driver.set_window_size(1200, 900)
            driver.get(srv.base + "/")
            js = driver.execute_script
            generating = lambda: js("return document.body.classList.contains('generating')")  # noqa: E731
            inp = driver.find_element(By.ID, "chatInput")
            inp.send_keys("/temperature 0")
            inp.send_keys(Keys.ENTER)
            inp.send_keys("What is 37*41?")
            inp.send_keys(Keys.ENTER)
            ck.check(wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#chat .message.assistant") and
                              not generating(), timeout=30), "picochat reply")
            tools = driver.find_elements(By.CSS_SELECTOR, "#chat .message.assistant .tool")
            ck.check(len(tools) == 1 and tools[0].find_element(By.CSS_SELECTOR, ".tool-expr").text == "37*41"
                     and tools[0].find_element(By.CSS_SELECTOR, ".tool-result").text == "1517",
                     f"picochat tool box: {[t.text for t in tools]}")
            reply = driver.find_element(By.CSS_SELECTOR, "#chat .message.assistant .content").text
            ck.check("1517" in reply and "<|" not in reply, f"picochat reply {reply!r}")
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(tmp, ignore_errors=True)
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
