#include <sqlite3.h>

/* Syncs a connection's database file and its log through SQLite's own file handles (an fd of our
   own on the database file would drop SQLite's POSIX locks when closed). */
static inline int kw_sqlite_sync_files(sqlite3 *db) {
    int rc = SQLITE_OK;
    int ops[2] = {SQLITE_FCNTL_FILE_POINTER, SQLITE_FCNTL_JOURNAL_POINTER};
    for (int i = 0; i < 2; i++) {
        sqlite3_file *f = 0;
        if (sqlite3_file_control(db, "main", ops[i], &f) == SQLITE_OK && f && f->pMethods) {
            int r = f->pMethods->xSync(f, SQLITE_SYNC_NORMAL | SQLITE_SYNC_DATAONLY);
            if (r != SQLITE_OK) rc = r;
        }
    }
    return rc;
}

/* Gives the open log file its blocks up to `bytes`, through SQLite's handle: the chunk size makes
   the unix VFS honour the size hint. */
static inline int kw_sqlite_preallocate_log(sqlite3 *db, sqlite3_int64 bytes, int chunk) {
    sqlite3_file *f = 0;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f) != SQLITE_OK || !f || !f->pMethods) return SQLITE_NOTFOUND;
    f->pMethods->xFileControl(f, SQLITE_FCNTL_CHUNK_SIZE, &chunk);
    return f->pMethods->xFileControl(f, SQLITE_FCNTL_SIZE_HINT, &bytes);
}
