#ifndef CKEYWARD_SQLITE_LOG_H
#define CKEYWARD_SQLITE_LOG_H

/* A SQLite VFS, "keyward-log", that is the system's default VFS except for write-ahead log files:
   the frames SQLite writes to a log one header and one page at a time (two write calls per page)
   are gathered in memory and written with one call per commit. Everything a reader can see goes
   through the file before SQLite publishes the commit in the shared log index, and nothing goes
   to the file after the connection releases the log's write lock. See the .c file.

   Registers the VFS once (later calls return the first result); returns SQLITE_OK or an error. */
int kw_sqlite_log_vfs_register(void);

/* The VFS's name, for sqlite3_open_v2. */
extern const char *const kw_sqlite_log_vfs_name;

/* For tests: how many write calls the open log of `db`'s main database made to its file, how many
   of SQLite's writes it gathered, and how many bytes are gathered now; SQLITE_NOTFOUND if no log of
   this VFS is open. */
typedef struct sqlite3 sqlite3;
int kw_sqlite_log_counts(sqlite3 *db, long long *calls, long long *gathered, long long *pending);

/* The file control behind kw_sqlite_log_counts (arg: long long[3]). */
#define KW_SQLITE_FCNTL_LOG_COUNTS 0x4B574C47

#endif
