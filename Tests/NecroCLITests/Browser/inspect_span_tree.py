"""Loads the dashboard in headless Chromium, waits until a task's node shows it done, clicks it,
waits until its span tree shows its work items, prints what the tree shows as one JSON line, and
saves a screenshot.

usage: inspect_span_tree.py URL TASK_KEY SCREENSHOT
"""
import sys, time

from devtools import Browser

url, task_key, screenshot = sys.argv[1:4]

with Browser(height=1100) as page:
    page.navigate(url)
    node = f"document.querySelector('[data-task=\"{task_key}\"]')"
    page.wait_for(f"!!{node} && {node}.getAttribute('data-state') === 'done'", f"{task_key} to show done", seconds=60)
    page.evaluate(f"{node}.dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
    page.wait_for("!!document.querySelector('#task [data-span=\"work_step_2\"][data-state=\"done\"]')", "the span tree")
    shown = page.evaluate("""(() => {
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
    page.screenshot(screenshot)
    print(shown, flush=True)
