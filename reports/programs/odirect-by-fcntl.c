/*
 * A file that refuses O_DIRECT at open(2) must refuse it from fcntl(F_SETFL)
 * too: otherwise a program gets by the second door the direct I/O the first
 * one said the file does not have.
 *
 * usage: odirect-by-fcntl <file>   (default: $MNT_a/four-mib)
 * exit 1: the two doors answer differently (the bug); 0: alike; 2: set-up.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char path[4096];
	int fd, open_errno = 0, fcntl_errno = 0, flags;

	if (argc > 1)
		snprintf(path, sizeof(path), "%s", argv[1]);
	else if (getenv("MNT_a"))
		snprintf(path, sizeof(path), "%s/four-mib", getenv("MNT_a"));
	else {
		fprintf(stderr, "usage: %s <file> (or set MNT_a)\n", argv[0]);
		return 2;
	}

	fd = open(path, O_RDONLY | O_DIRECT);
	if (fd < 0)
		open_errno = errno;
	else
		close(fd);

	fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror(path);
		return 2;
	}
	flags = fcntl(fd, F_GETFL);
	if (fcntl(fd, F_SETFL, flags | O_DIRECT) < 0)
		fcntl_errno = errno;
	else if (!(fcntl(fd, F_GETFL) & O_DIRECT))
		fcntl_errno = -1; /* accepted without effect: not a refusal either */
	close(fd);

	printf("open(O_DIRECT): %s; fcntl(F_SETFL, O_DIRECT): %s\n",
	       open_errno ? strerror(open_errno) : "ok",
	       fcntl_errno > 0 ? strerror(fcntl_errno) :
	       fcntl_errno ? "accepted, no effect" : "ok");
	if (open_errno != fcntl_errno && fcntl_errno != -1) {
		printf("BUG: O_DIRECT is answered differently at open and by fcntl\n");
		return 1;
	}
	return 0;
}
