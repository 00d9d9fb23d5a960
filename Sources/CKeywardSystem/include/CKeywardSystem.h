#ifndef CKEYWARD_SYSTEM_H
#define CKEYWARD_SYSTEM_H
/// Forbids core dumps and ptrace attachment by other processes of the same user, so plaintext in
/// memory cannot be written to disk by a crash. Returns 0 on success, -1 with errno otherwise.
int kw_disable_core_dumps(void);
#endif
