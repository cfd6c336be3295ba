/*
 * mmap_file.h: read-only whole-file mappings, the way checkpoints are read
 * (tensor data is used in place, never copied; docs/formats.md, nanochat .pt).
 */
#ifndef NC_UTIL_MMAP_FILE_H
#define NC_UTIL_MMAP_FILE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;         /* file size in bytes */
} nc_mapped_file;

/* Maps `path` read-only (MAP_PRIVATE). Fails with a message naming the path
 * if it cannot be opened, is not a regular file, or cannot be mapped. An
 * empty file succeeds with data == NULL and size == 0. */
int nc_map_file(const char *path, nc_mapped_file *out);

/* Unmaps; a zeroed struct is fine. */
void nc_unmap_file(nc_mapped_file *f);

/* Gives back the whole pages inside [p, p + bytes) (MADV_DONTNEED): in a
 * read-only file mapping they stay in the page cache and would refault
 * identical; anonymous memory is freed (and reads as zeros). For data that
 * nothing reads any more (weights copied or converted elsewhere). */
void nc_release_pages(const void *p, size_t bytes);

/* Reads a whole (small) file into a malloc'ed, NUL-terminated buffer, up to
 * `max_bytes` (larger files fail). Sets *len if non-NULL. */
char *nc_read_file(const char *path, size_t max_bytes, size_t *len);

#endif /* NC_UTIL_MMAP_FILE_H */
