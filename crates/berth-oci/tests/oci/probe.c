/* The oci suite's probe: a static program run inside test containers (bind-mounted at
 * /probe) to report what busybox cannot: errnos of single system calls, the session, the
 * NUMA memory policy and the scheduling attributes. Built by the suite with `cc -static`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct sched_attr_v1 {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
    uint32_t util_min, util_max;
};

static int errno_of(long ret) { return ret < 0 ? errno : 0; }

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "errnos")) {
        /* faccessat2 (439) is newer than any syscall the seccomp tests' profiles list;
         * getppid (110) is older and left out of them. */
        int newer = errno_of(syscall(439, AT_FDCWD, "/", F_OK, 0));
        int older = errno_of(syscall(SYS_getppid));
        printf("newer=%d older=%d\n", newer, older);
    } else if (!strcmp(what, "session")) {
        printf("pid=%d pgrp=%d sid=%d\n", getpid(), getpgrp(), getsid(0));
    } else if (!strcmp(what, "mempolicy")) {
        int mode = -1;
        unsigned long mask[16] = {0};
        if (syscall(SYS_get_mempolicy, &mode, mask, 16 * 8 * sizeof(unsigned long), 0, 0) < 0) {
            printf("get_mempolicy: errno=%d\n", errno);
            return 1;
        }
        /* The mode flags come back in the mode (MPOL_F_STATIC_NODES, ...). */
        printf("mode=%d nodes=%lx\n", mode, mask[0]);
    } else if (!strcmp(what, "sched")) {
        struct sched_attr_v1 a;
        memset(&a, 0, sizeof a);
        if (syscall(SYS_sched_getattr, 0, &a, sizeof a, 0) < 0) {
            printf("sched_getattr: errno=%d\n", errno);
            return 1;
        }
        printf("policy=%u flags=%llu priority=%u nice=%d\n", a.policy, (unsigned long long)a.flags, a.priority,
               a.nice);
    } else {
        fprintf(stderr, "usage: probe errnos|session|mempolicy|sched\n");
        return 2;
    }
    return 0;
}
