/* Shared by mbuild and machine: diagnostics, dispatch and formatting. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mbuild/version.h"

#include "cli.h"

const char *cli_program = "mbuild";

const char cli_exit_codes[] = "Exit status:\n"
                              "  0    success\n"
                              "  1    failure (I/O, a helper program, anything else)\n"
                              "  2    bad command line or Machinefile\n"
                              "  3    a build step failed or timed out\n"
                              "  4    damaged or untrusted data: a digest did not match\n"
                              "  130  interrupted (SIGINT or SIGTERM)\n";

int cli_fail(const struct mb_error *err)
{
    fprintf(stderr, "%s: error: %s\n", cli_program, err->msg);
    return err->code == MB_OK ? MB_ERR_GENERAL : err->code;
}

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: error: ", cli_program);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", cli_program);
    return MB_ERR_INPUT;
}

int cli_dispatch(const struct cli_command *table, size_t count, int argc, char **argv)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(table[i].name, argv[0]) == 0)
            return table[i].run(argc, argv);
    return cli_usage_error("unknown command '%s'", argv[0]);
}

int cli_main(int argc, char **argv, const struct cli_command *table, size_t count,
             int (*usage)(FILE *out, int status))
{
    if (argc < 2)
        return usage(stderr, MB_ERR_INPUT);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0)
        return usage(stdout, 0);
    if (strcmp(argv[1], "--version") == 0)
        return cli_version();
    if (argv[1][0] == '-')
        return cli_usage_error("unknown option '%s'", argv[1]);
    return cli_dispatch(table, count, argc - 1, argv + 1);
}

void cli_print_commands(FILE *out, const struct cli_command *table, size_t count)
{
    for (size_t i = 0; i < count; i++)
        fprintf(out, "  %-12s %s\n", table[i].name, table[i].summary);
}

void cli_format_size(unsigned long long bytes, char *buf, size_t size)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    size_t u = 0;

    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%llu B", bytes);
    else
        snprintf(buf, size, "%.1f %s", v, units[u]);
}

void cli_format_time(long long unix_seconds, char *buf, size_t size)
{
    time_t t = (time_t)unix_seconds;
    struct tm tm;

    if (localtime_r(&t, &tm) == NULL || strftime(buf, size, "%Y-%m-%d %H:%M", &tm) == 0)
        snprintf(buf, size, "-");
}

int cli_version(void)
{
    struct mb_error err;
    char *report = mb_version_report(cli_program, &err);

    if (report == NULL)
        return cli_fail(&err);
    fputs(report, stdout);
    free(report);
    return 0;
}
