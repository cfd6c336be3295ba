/*
 * zip.h: a read-only ZIP reader over a buffer (an mmapped file), for
 * PyTorch's checkpoint format (torch.save writes a zip of stored entries,
 * data 64-byte aligned, ZIP64 once the file passes 4 GB: d34 is 8.6 GB).
 *
 * Reads the central directory (ZIP64 end record + locator and ZIP64 extra
 * fields included), and for each entry the local header, because the data
 * starts after the LOCAL header's name and extra fields, whose lengths may
 * differ from the central copy. Every offset and length is checked against
 * the buffer: a lying header gives an error, never a read outside it. Only
 * stored (method 0) entries can be read; others are refused by name.
 */
#ifndef NC_FORMATS_ZIP_H
#define NC_FORMATS_ZIP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;     /* NUL-terminated, owned by the archive */
    uint16_t method;      /* 0 = stored; anything else cannot be read */
    uint64_t size;        /* uncompressed size */
    uint64_t comp_size;   /* compressed size (== size when stored) */
    uint64_t data_offset; /* where the data starts in the buffer */
} nc_zip_entry;

typedef struct nc_zip nc_zip;

/* Parses the archive in data[0..len). The buffer must outlive the archive.
 * NULL + nc_error() on a malformed or truncated archive. */
nc_zip *nc_zip_open(const uint8_t *data, size_t len);
void nc_zip_close(nc_zip *z);

int nc_zip_count(const nc_zip *z);
const nc_zip_entry *nc_zip_at(const nc_zip *z, int i);
/* Exact-name lookup (binary search), or NULL. */
const nc_zip_entry *nc_zip_find(const nc_zip *z, const char *name);

/* The bytes of a stored entry (size e->size), or NULL + nc_error() for a
 * compressed one. Never NULL for a stored entry (empty data points into the
 * buffer). */
const uint8_t *nc_zip_data(const nc_zip *z, const nc_zip_entry *e);

#endif /* NC_FORMATS_ZIP_H */
