/*
 * zip.c: read-only ZIP (+ ZIP64) directory reader (zip.h).
 *
 * Layout reminder (APPNOTE.TXT): ... local header + data per entry ...,
 * central directory (one 46-byte record + name + extra + comment per entry),
 * [ZIP64 end record (56+ bytes), ZIP64 locator (20 bytes)], end record
 * (22 bytes + comment). When a 16/32-bit field is saturated (0xFFFF /
 * 0xFFFFFFFF), the real value is in the ZIP64 record or in the entry's ZIP64
 * extra field (id 0x0001), which holds only the saturated fields, in the
 * order: uncompressed size, compressed size, local header offset.
 */
#include "zip.h"

#include <stdlib.h>
#include <string.h>

#include "../util/common.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_EOCD64_LOCATOR 0x07064b50u

struct nc_zip {
    const uint8_t *data;
    size_t len;
    nc_zip_entry *entries; /* sorted by name; each name malloc'ed */
    int n, cap;
};

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* Whether [off, off+n) lies inside a buffer of `len` bytes, overflow-safe. */
static int in_bounds(uint64_t off, uint64_t n, size_t len) { return off <= len && n <= len - off; }

typedef struct {
    uint64_t n_entries, cd_offset, cd_size;
} directory;

static int find_directory(const uint8_t *d, size_t len, directory *dir) {
    if (len < 22) return nc_fail("zip: file too small (%zu bytes) to be an archive", len);
    /* The end record is the last 22 bytes plus a comment of up to 65535. */
    size_t lowest = len > 22 + 65535 ? len - 22 - 65535 : 0;
    size_t eocd = (size_t)-1;
    for (size_t p = len - 22 + 1; p-- > lowest;) {
        if (rd32(d + p) == SIG_EOCD && p + 22 + rd16(d + p + 20) == len) {
            eocd = p;
            break;
        }
    }
    if (eocd == (size_t)-1)
        return nc_fail("zip: no end-of-central-directory record (truncated or not a zip file)");
    dir->n_entries = rd16(d + eocd + 10);
    dir->cd_size = rd32(d + eocd + 12);
    dir->cd_offset = rd32(d + eocd + 16);
    if (eocd >= 20 && rd32(d + eocd - 20) == SIG_EOCD64_LOCATOR) {
        uint64_t off = rd64(d + eocd - 20 + 8);
        if (!in_bounds(off, 56, len) || rd32(d + off) != SIG_EOCD64)
            return nc_fail("zip: ZIP64 locator points outside the file or at no ZIP64 end record");
        dir->n_entries = rd64(d + off + 32);
        dir->cd_size = rd64(d + off + 40);
        dir->cd_offset = rd64(d + off + 48);
    }
    if (!in_bounds(dir->cd_offset, dir->cd_size, len))
        return nc_fail("zip: central directory (offset %llu, %llu bytes) lies outside the %zu-byte file",
                       (unsigned long long)dir->cd_offset, (unsigned long long)dir->cd_size, len);
    if (dir->n_entries > dir->cd_size / 46)
        return nc_fail("zip: %llu entries cannot fit in a %llu-byte central directory",
                       (unsigned long long)dir->n_entries, (unsigned long long)dir->cd_size);
    return 0;
}

/* Applies the ZIP64 extra field (id 1) of a central record to the saturated values. */
static int apply_zip64_extra(const uint8_t *extra, size_t n, uint64_t *size, uint64_t *comp, uint64_t *local) {
    size_t p = 0;
    while (p + 4 <= n) {
        uint16_t id = rd16(extra + p), sz = rd16(extra + p + 2);
        if (p + 4 + sz > n) return nc_fail("zip: extra field runs past its record");
        if (id == 0x0001) {
            const uint8_t *f = extra + p + 4;
            size_t q = 0;
            uint64_t *fields[3] = {size, comp, local};
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xffffffffu) continue;
                if (q + 8 > sz) return nc_fail("zip: ZIP64 extra field too short");
                *fields[i] = rd64(f + q);
                q += 8;
            }
            return 0;
        }
        p += 4 + (size_t)sz;
    }
    if (*size == 0xffffffffu || *comp == 0xffffffffu || *local == 0xffffffffu)
        return nc_fail("zip: saturated 32-bit size or offset without a ZIP64 extra field");
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const nc_zip_entry *)a)->name, ((const nc_zip_entry *)b)->name);
}

nc_zip *nc_zip_open(const uint8_t *d, size_t len) {
    directory dir = {0};
    if (find_directory(d, len, &dir)) return NULL;
    nc_zip *z = nc_xcalloc(1, sizeof *z);
    z->data = d;
    z->len = len;
    if (dir.n_entries > INT32_MAX) {
        nc_fail("zip: %llu entries", (unsigned long long)dir.n_entries);
        goto fail;
    }
    uint64_t p = dir.cd_offset, end = dir.cd_offset + dir.cd_size;
    for (uint64_t i = 0; i < dir.n_entries; i++) {
        if (end - p < 46 || rd32(d + p) != SIG_CENTRAL) {
            nc_fail("zip: bad central directory record %llu at offset %llu", (unsigned long long)i,
                    (unsigned long long)p);
            goto fail;
        }
        const uint8_t *r = d + p;
        uint16_t flags = rd16(r + 8), method = rd16(r + 10);
        uint64_t comp = rd32(r + 20), size = rd32(r + 24), local = rd32(r + 42);
        size_t name_len = rd16(r + 28), extra_len = rd16(r + 30), comment_len = rd16(r + 32);
        if (end - p - 46 < name_len + extra_len + comment_len) {
            nc_fail("zip: central directory record %llu runs past the directory", (unsigned long long)i);
            goto fail;
        }
        if (apply_zip64_extra(r + 46 + name_len, extra_len, &size, &comp, &local)) goto fail;
        if (flags & 1) {
            nc_fail("zip: entry %llu is encrypted", (unsigned long long)i);
            goto fail;
        }
        /* grown as records prove real, so a lying entry count costs nothing */
        if (z->n == z->cap) {
            z->cap = z->cap ? 2 * z->cap : 64;
            z->entries = nc_xrealloc(z->entries, (size_t)z->cap * sizeof(nc_zip_entry));
        }
        nc_zip_entry *e = &z->entries[z->n];
        if (memchr(r + 46, 0, name_len)) {
            nc_fail("zip: entry %llu has a NUL byte in its name", (unsigned long long)i);
            goto fail;
        }
        char *name = nc_xmalloc(name_len + 1);
        memcpy(name, r + 46, name_len);
        name[name_len] = 0;
        memset(e, 0, sizeof *e);
        e->name = name;
        z->n++; /* owned from here on, even if the checks below fail */
        e->method = method;
        e->size = size;
        e->comp_size = comp;
        /* The data follows the LOCAL header, whose name/extra lengths may
         * differ from the central record's (torch pads the local extra field
         * to align data to 64 bytes). */
        if (!in_bounds(local, 30, len) || rd32(d + local) != SIG_LOCAL) {
            nc_fail("zip: entry '%s': no local header at offset %llu", name, (unsigned long long)local);
            goto fail;
        }
        uint64_t data_off = local + 30 + rd16(d + local + 26) + rd16(d + local + 28);
        if (!in_bounds(data_off, comp, len)) {
            nc_fail("zip: entry '%s' (%llu bytes at offset %llu) runs past the end of the %zu-byte file "
                    "(truncated?)", name, (unsigned long long)comp, (unsigned long long)data_off, len);
            goto fail;
        }
        if (method == 0 && comp != size) {
            nc_fail("zip: stored entry '%s' has compressed size %llu != size %llu", name,
                    (unsigned long long)comp, (unsigned long long)size);
            goto fail;
        }
        e->data_offset = data_off;
        p += 46 + name_len + extra_len + comment_len;
    }
    if (z->n > 1) qsort(z->entries, (size_t)z->n, sizeof(nc_zip_entry), cmp_entry);
    for (int i = 1; i < z->n; i++)
        if (!strcmp(z->entries[i].name, z->entries[i - 1].name)) {
            nc_fail("zip: entry '%s' appears twice", z->entries[i].name);
            goto fail;
        }
    return z;
fail:
    nc_zip_close(z);
    return NULL;
}

void nc_zip_close(nc_zip *z) {
    if (!z) return;
    for (int i = 0; i < z->n; i++) free((char *)z->entries[i].name);
    free(z->entries);
    free(z);
}

int nc_zip_count(const nc_zip *z) { return z->n; }

const nc_zip_entry *nc_zip_at(const nc_zip *z, int i) {
    NC_ASSERT(i >= 0 && i < z->n);
    return &z->entries[i];
}

const nc_zip_entry *nc_zip_find(const nc_zip *z, const char *name) {
    nc_zip_entry key = {.name = name};
    if (z->n == 0) return NULL;
    return bsearch(&key, z->entries, (size_t)z->n, sizeof(nc_zip_entry), cmp_entry);
}

const uint8_t *nc_zip_data(const nc_zip *z, const nc_zip_entry *e) {
    if (e->method != 0) {
        nc_fail("zip: entry '%s' is compressed (method %u); only stored entries are supported (torch.save "
                "writes them uncompressed)", e->name, e->method);
        return NULL;
    }
    return z->data + e->data_offset;
}
