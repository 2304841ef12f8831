"""The dashboard page in headless Chromium: asks for a key, keeps it, shows workers and models."""

from __future__ import annotations

import pytest

from .cdp import Browser, chromium_path
from .conftest import auth

@pytest.fixture(autouse=True)
def _chromium_installed():
    if chromium_path() is None:
        pytest.fail("Debian's chromium is not installed: run scripts/setup (apt-get install chromium)")

# resolves once the page has rendered a status answer (data-loaded) or shown an error
WAIT_RENDERED = """new Promise((resolve) => {
  const done = () => document.body.dataset.loaded || document.getElementById('error').textContent;
  if (done()) return resolve(true);
  new MutationObserver(() => { if (done()) resolve(true); })
    .observe(document.body, {attributes: true, subtree: true, childList: true, characterData: true});
})"""

READ_PAGE = """({
  error: document.getElementById('error').textContent,
  rows: [...document.querySelectorAll('#workers tr')].map(tr => [...tr.children].map(td => td.textContent)),
  models: [...document.querySelectorAll('#models li')].map(li => li.textContent),
  requests: document.getElementById('requests').textContent,
  stored: localStorage.getItem('meshGatewayApiKey'),
})"""


async def test_dashboard_in_chromium(client, keys, tmp_path):
    for _ in range(3):
        r = await client.post("/api/v1/inference/linear", headers=auth(keys["infer"]), json={
            "inputs": {"x": {"shape": [1, 4], "dtype": "float32", "data": [1, 2, 3, 4]}}})
        assert r.status == 200
    url = str(client.make_url("/"))
    browser = await Browser.launch(str(tmp_path / "chromium-profile"))
    try:
        await browser.navigate(url)
        await browser.evaluate(WAIT_RENDERED)
        page = await browser.evaluate(READ_PAGE)
        assert "Enter an API key" in page["error"] and page["rows"] == []

        await browser.evaluate(f"""document.getElementById('key').value = {keys['infer']!r};
            document.getElementById('error').textContent = '';
            document.getElementById('key-form').requestSubmit(); true""")
        await browser.evaluate(WAIT_RENDERED)
        page = await browser.evaluate(READ_PAGE)
        assert page["error"].startswith("403:") and "lacks scope 'admin'" in page["error"]

        await browser.evaluate(f"""document.getElementById('key').value = {keys['admin']!r};
            document.getElementById('error').textContent = '';
            document.getElementById('key-form').requestSubmit(); true""")
        await browser.evaluate(WAIT_RENDERED)
        page = await browser.evaluate(READ_PAGE)
        assert page["error"] == "" and page["stored"] == keys["admin"]
        assert page["models"] == ["linear"]
        linear = [row for row in page["rows"] if row[0] == "linear"]
        assert len(linear) == 3 and all(row[2] == "healthy" for row in linear)
        assert sum(int(row[7]) for row in linear) >= 3
        assert float(page["requests"]) >= 3

        for _ in range(5):
            r = await client.post("/api/v1/inference/linear", headers=auth(keys["infer"]), json={
                "inputs": {"x": {"shape": [1, 4], "dtype": "float32", "data": [1, 2, 3, 4]}}})
            assert r.status == 200
        rate = await browser.evaluate("refresh().then(() => document.getElementById('rate').textContent)")
        assert float(rate) > 0   # requests/s from the change in totals between two refreshes

        await browser.navigate(url)   # the key survives a reload (localStorage)
        await browser.evaluate(WAIT_RENDERED)
        page = await browser.evaluate(READ_PAGE)
        assert page["error"] == "" and len(page["rows"]) >= 3
    finally:
        await browser.close()
