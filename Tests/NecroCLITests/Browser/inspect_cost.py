"""Loads the dashboard in headless Chromium, waits until a task shows done and the taskset's cost
is shown in the header, clicks the task, waits for its cost, and prints both as one JSON line.

usage: inspect_cost.py URL TASK_KEY
"""
import json, sys

from devtools import Browser

url, task_key = sys.argv[1:3]

with Browser(height=900) as page:
    page.navigate(url)
    node = f"document.querySelector('[data-task=\"{task_key}\"]')"
    page.wait_for(f"!!{node} && {node}.getAttribute('data-state') === 'done'", f"{task_key} to show done", seconds=60)
    page.wait_for("document.getElementById('cost').textContent !== ''", "the taskset's cost")
    page.evaluate(f"{node}.dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
    page.wait_for("!!document.getElementById('task-usage')", "the task's cost")
    total = page.evaluate("document.getElementById('cost').textContent")
    task = page.evaluate("document.getElementById('task-usage').textContent")
    print(json.dumps({"total": total, "task": task}), flush=True)
