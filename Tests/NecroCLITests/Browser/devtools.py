"""Headless Chromium driven through the DevTools protocol, for the dashboard's browser tests:
`with Browser() as page: page.navigate(url); page.wait_for(js, what); page.evaluate(js)`."""
import base64, json, os, socket, subprocess, sys, tempfile, time, urllib.request

import websocket


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    def __init__(self, height=900):
        self.port = free_port()
        profile = tempfile.mkdtemp(prefix="necro-chromium-")
        self.chrome = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--remote-debugging-port={self.port}",
             f"--user-data-dir={profile}", f"--window-size=1400,{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.counter = 0

    def __enter__(self):
        deadline = time.time() + 30
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list"))
                page = next(t for t in targets if t["type"] == "page")
                break
            except Exception:
                if time.time() > deadline:
                    self.fail("chromium's DevTools did not answer")
                time.sleep(0.05)
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.call("Page.enable")
        return self

    def __exit__(self, *exception):
        self.chrome.kill()

    def fail(self, message):
        print("error: " + message, flush=True)
        self.chrome.kill()
        sys.exit(1)

    def call(self, method, **params):
        self.counter += 1
        self.ws.send(json.dumps({"id": self.counter, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.counter:
                if "error" in reply:
                    self.fail(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression, what, seconds=30):
        """Waits until `expression` is true (a boolean: `!!` a DOM node, which comes back as `{}`)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.05)
        self.fail(f"timed out waiting for {what}")

    def navigate(self, url):
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", "the page to load")

    def screenshot(self, path):
        shot = self.call("Page.captureScreenshot", format="png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(base64.b64decode(shot["data"]))
