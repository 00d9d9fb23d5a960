"""The SQLite log written a commit at a time (the keyward-log VFS gathers each commit's frames into
one write call): another process, Python's own sqlite3 with SQLite's default VFS, finds every
exchange in the database as soon as its answer arrives, and the database checks whole after the
server stops. A commit published before its frames were in the file would show here as a
missing row or a malformed database."""
import os
import sqlite3



def test_every_answered_exchange_is_readable_by_another_process_at_once(fresh_gateway):
    g = fresh_gateway()
    token = g.new_tenant("log", store="always")
    client = g.openai(token)
    db = sqlite3.connect(f"file:{os.path.join(g.data, 'keyward.sqlite3')}?mode=ro", uri=True)
    try:
        for i in range(60):
            # Messages of different sizes, so that commits span different numbers of pages.
            answer = client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": f"{i} " + "x" * (i * 97)}])
            rows = db.execute("SELECT kind, length(body) FROM records WHERE id = ? ORDER BY kind", (answer.id,)).fetchall()
            assert [kind for kind, _ in rows] == ["chat.request", "chat.response"], (i, rows)
            assert all(size > 0 for _, size in rows)
            events = db.execute("SELECT count(*) FROM audit_events WHERE record = ?", (answer.id,)).fetchone()[0]
            assert events == 1, (i, events)
    finally:
        db.close()
    assert g.stop() == 0
    with sqlite3.connect(os.path.join(g.data, "keyward.sqlite3")) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
