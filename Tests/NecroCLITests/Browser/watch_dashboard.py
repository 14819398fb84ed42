"""Loads the dashboard in headless Chromium, waits until a task's node shows it running, says so
on stdout (the test then lets the task finish), waits until the same page, never reloaded, shows
it done, and saves a screenshot.

usage: watch_dashboard.py URL TASK_KEY SCREENSHOT
"""
import sys, time

from devtools import Browser

url, task_key, screenshot = sys.argv[1:4]

with Browser() as page:
    page.navigate(url)
    page.evaluate("window.__loadedOnce = 'yes'")
    node_state = f"(document.querySelector('[data-task=\"{task_key}\"]') || {{getAttribute: () => null}}).getAttribute('data-state')"
    page.wait_for(f"{node_state} === 'running'", f"{task_key} to show running")
    print("running", flush=True)
    page.wait_for(f"{node_state} === 'done'", f"{task_key} to show done", seconds=60)
    if page.evaluate("window.__loadedOnce") != "yes":
        page.fail("the page was reloaded")
    live = page.evaluate("document.getElementById('conn').textContent")
    time.sleep(0.6)  # the timeline and pools redraw a moment after a change: let the picture show it
    page.screenshot(screenshot)
    print(f"done {live}", flush=True)
