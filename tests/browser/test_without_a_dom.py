"""The client outside a browser: Node with an IndexedDB polyfill handed in as options, no window,
no document, no Web Locks, the way a React Native app or a WebView bridge runs it. It is fetched
from the ingress like any app would, and its events land in the real settings database."""
from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.request
import uuid

from tests.support.db import query

NODE_MODULES = pathlib.Path(__file__).parent / "node_modules"

# Sends three settings events and waits for their applied receipts; prints what it saw.
SCRIPT = """
import { indexedDB, IDBKeyRange } from 'fake-indexeddb';
const { SpotterClient } = await import(process.argv[2]);
const [base, user, token] = process.argv.slice(3);
if (typeof window !== 'undefined' || typeof document !== 'undefined' || globalThis.indexedDB) {
  throw new Error('not a DOM-less context');
}
const client = new SpotterClient({ baseUrl: base, userId: user, getToken: () => token, indexedDB,
  IDBKeyRange, inbox: false, receiptIntervalMs: 200 });
const applied = [];
client.addEventListener('applied', (e) => applied.push(e.detail.id));
const ids = [];
for (const patch of [{ theme: 'dark' }, { units: 'imperial' }, { language: 'de' }]) {
  ids.push(await client.send('app.settings.updated', patch));
}
const deadline = Date.now() + 30000;
while (applied.length < ids.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
console.log(JSON.stringify({ ids, applied, pending: await client.pending({ includeSent: true }) }));
client.close();
"""


def test_the_client_runs_where_indexeddb_is_a_polyfill_and_there_is_no_dom(stack, tmp_path):
    user = str(uuid.uuid4())
    with urllib.request.urlopen(stack.base + "/api/v1/client/spotter.js", timeout=5) as resp:
        module = tmp_path / "spotter.mjs"
        module.write_bytes(resp.read())
    script = tmp_path / "app.mjs"
    script.write_text(SCRIPT)
    (tmp_path / "node_modules").symlink_to(NODE_MODULES)  # resolves the polyfill from the tests' lock

    run = subprocess.run(["node", str(script), module.as_uri(), stack.base, user, stack.token(user)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])

    assert sorted(seen["applied"]) == sorted(seen["ids"])  # every receipt came back applied
    assert seen["pending"] == []
    rows = query(stack.env["SETTINGS_DATABASE_URL"], "SELECT settings FROM app_settings WHERE user_id = %s", (user,))
    assert rows == [({"theme": "dark", "units": "imperial", "language": "de"},)]  # all three landed
