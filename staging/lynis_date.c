/* date(1) for Lynis's own timestamps, statically linked (staging/lynis.py).
 *
 * Lynis forks `date` for every line it logs (~9,000 per audit). Under TCG each exec of
 * coreutils' dynamically linked date costs ~100-150 ms, a static one ~10 ms more than the
 * subshell around it: this answers the formats Lynis asks for itself and hands every other
 * call (`date -d ...` in its kernel tests) to /usr/bin/date unchanged.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc == 2 && argv[1][0] == '+') {
        const char *format = argv[1] + 1;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (!strcmp(format, "%s")) {
            printf("%lld\n", (long long)now.tv_sec);
            return 0;
        }
        if (!strcmp(format, "%N")) {
            printf("%09ld\n", now.tv_nsec);
            return 0;
        }
        if (!strcmp(format, "%s%N")) {
            printf("%lld%09ld\n", (long long)now.tv_sec, now.tv_nsec);
            return 0;
        }
        if (!strcmp(format, "%Y-%m-%d %H:%M:%S") || !strcmp(format, "%F %H:%M:%S")) {
            char text[32];
            struct tm local;
            localtime_r(&now.tv_sec, &local);
            strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &local);
            puts(text);
            return 0;
        }
    }
    execv("/usr/bin/date", argv);
    perror("/usr/bin/date");
    return 127;
}
