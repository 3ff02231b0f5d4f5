/*
 * A program for the suite to run from an EROFS mount: it says which file the kernel
 * thinks it runs (/proc/self/exe) and which file its code is mapped from (the line of
 * /proc/self/maps that holds main), then what prctl(PR_SET_MM_EXE_FILE) answers when asked
 * to make its own file its executable again while that file is mapped (EBUSY: the kernel
 * refuses to change /proc/self/exe while the old one is still mapped), then exits 42.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(void)
{
	char exe[4096], line[8192];
	uintptr_t here = (uintptr_t)&main;
	ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	FILE *maps = fopen("/proc/self/maps", "r");

	if (len < 0 || !maps)
		return 1;
	exe[len] = '\0';
	printf("exe %s\n", exe);
	while (fgets(line, sizeof(line), maps)) {
		unsigned long start, end;
		char *path = strchr(line, '/');

		if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start <= here && here < end) {
			if (path)
				path[strcspn(path, "\n")] = '\0';
			printf("text %s\n", path ? path : "(anonymous)");
		}
	}
	fclose(maps);
	/* 0: it was allowed; else the errno (needs CAP_SYS_RESOURCE: the suite runs as root) */
	int self = open("/proc/self/exe", O_RDONLY);
	if (self >= 0)
		printf("exe_file_change %d\n",
		       prctl(PR_SET_MM, PR_SET_MM_EXE_FILE, self, 0, 0) ? errno : 0);
	return 42;
}
