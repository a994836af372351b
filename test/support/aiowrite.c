/* Writes a value to a file through Linux AIO (io_submit), as a tenant could to a sysctl:
 * a write that raises no inotify IN_MODIFY. Usage: aiowrite FILE VALUE */
#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: aiowrite FILE VALUE\n");
    return 2;
  }
  aio_context_t ctx = 0;
  if (syscall(SYS_io_setup, 1, &ctx) < 0) { perror("io_setup"); return 1; }
  int fd = open(argv[1], O_WRONLY);
  if (fd < 0) { perror("open"); return 1; }
  struct iocb cb;
  memset(&cb, 0, sizeof cb);
  cb.aio_fildes = fd;
  cb.aio_lio_opcode = IOCB_CMD_PWRITE;
  cb.aio_buf = (unsigned long)argv[2];
  cb.aio_nbytes = strlen(argv[2]);
  struct iocb *cbs[1] = {&cb};
  if (syscall(SYS_io_submit, ctx, 1, cbs) != 1) { perror("io_submit"); return 1; }
  struct io_event ev;
  if (syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) != 1) { perror("io_getevents"); return 1; }
  if ((long long)ev.res < 0) { fprintf(stderr, "aio write: %s\n", strerror((int)-ev.res)); return 1; }
  return 0;
}
