/*
 * A program for the suite to run from an EROFS mount: it says which file the kernel
 * thinks it runs (/proc/self/exe) and which file its code is mapped from (the line of
 * /proc/self/maps that holds main), then exits 42.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
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
	return 42;
}
