"""Drive an explorer page (``flowfit explore``) from Python and take a screenshot: the page's
``window.flowfit`` handle sets the time and picks a data point, as a reader would with the
slider and a click. This is how ``docs/explore.png`` (README, docs) is made (``make figures``).

    .venv/bin/flowfit explore --model runs/demo --out runs/demo/explore.html
    .venv/bin/python examples/explore_screenshot.py runs/demo/explore.html docs/explore.png

It needs Debian's Chromium at /usr/bin/chromium (``apt-get install chromium``); Playwright
drives it and downloads nothing.
"""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

page_path, picture = Path(sys.argv[1]), Path(sys.argv[2])
flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]
with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
    page = browser.new_page(viewport={"width": 1230, "height": 820})
    page.goto(page_path.resolve().as_uri())
    page.evaluate("window.flowfit.setTime(0.6)")  # 60% of the way from N(0, I) to the data
    page.evaluate("window.flowfit.select(5)")  # as if data point 5 had been clicked
    density = page.locator("[data-testid=density]").bounding_box()
    page.mouse.move(density["x"] + 0.3 * density["width"], density["y"] + 0.35 * density["height"])
    page.screenshot(path=str(picture), full_page=True)
    browser.close()
print(f"wrote {picture}")
