"""Drives headless Chromium through the DevTools protocol: loads the dashboard, waits until a
task's node shows it done, clicks it, waits until its span tree shows its work items, prints
what the tree shows as one JSON line, and saves a screenshot.

usage: inspect_span_tree.py URL TASK_KEY SCREENSHOT
"""
import base64, json, os, socket, subprocess, sys, tempfile, time, urllib.request

import websocket

url, task_key, screenshot = sys.argv[1:4]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


port = free_port()
profile = tempfile.mkdtemp(prefix="necro-chromium-")
chrome = subprocess.Popen(
    ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--remote-debugging-port={port}",
     f"--user-data-dir={profile}", "--window-size=1400,1100", "about:blank"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fail(message):
    print("error: " + message, flush=True)
    chrome.kill()
    sys.exit(1)


try:
    deadline = time.time() + 30
    while True:
        try:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
            page = next(t for t in targets if t["type"] == "page")
            break
        except Exception:
            if time.time() > deadline:
                fail("chromium's DevTools did not answer")
            time.sleep(0.05)

    ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
    counter = [0]

    def call(method, **params):
        counter[0] += 1
        ws.send(json.dumps({"id": counter[0], "method": method, "params": params}))
        while True:
            reply = json.loads(ws.recv())
            if reply.get("id") == counter[0]:
                if "error" in reply:
                    fail(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(expression):
        return call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(expression, what, seconds=30):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if evaluate(expression):
                return
            time.sleep(0.05)
        fail(f"timed out waiting for {what}")

    call("Page.enable")
    call("Page.navigate", url=url)
    wait_for("document.readyState === 'complete'", "the page to load")
    node = f"document.querySelector('[data-task=\"{task_key}\"]')"
    wait_for(f"!!{node} && {node}.getAttribute('data-state') === 'done'", f"{task_key} to show done", seconds=60)
    evaluate(f"{node}.dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
    wait_for("!!document.querySelector('#task [data-span=\"work_step_2\"][data-state=\"done\"]')", "the span tree")
    shown = evaluate("""(() => {
      const spans = [...document.querySelectorAll('#task [data-span]')].map(d => ({
        span: d.getAttribute('data-span'),
        parent: d.parentElement.closest('[data-span]') ? d.parentElement.closest('[data-span]').getAttribute('data-span') : null,
        state: d.getAttribute('data-state'),
        head: d.querySelector('.span-head').textContent,
        events: [...d.children].filter(c => c.classList.contains('ev')).map(c => c.getAttribute('data-event')),
        text: [...d.children].filter(c => c.classList.contains('ev')).map(c => c.textContent.replace(/^\\S+ #\\d+ /, '')),
      }));
      const gates = [...document.querySelectorAll('#task .gate-output')].map(p => p.textContent);
      return JSON.stringify({spans, gates});
    })()""")
    time.sleep(0.3)
    shot = call("Page.captureScreenshot", format="png")
    os.makedirs(os.path.dirname(screenshot), exist_ok=True)
    with open(screenshot, "wb") as file:
        file.write(base64.b64decode(shot["data"]))
    print(shown, flush=True)
finally:
    chrome.kill()
