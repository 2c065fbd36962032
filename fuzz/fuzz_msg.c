/*
 * fuzz_msg: libFuzzer target for the wire-protocol decoder (common/msg.h).
 *
 * Input format (the seeds in fuzz/corpus/fuzz_msg/ are written by
 * tests/common/test_msg.c with MASKPS_WRITE_SEEDS=<dir>):
 *   byte 0          frame count k (taken mod MSG_MAX_FRAMES + 3, so missing
 *                   and extra frames both happen); bit 7 also shifts every
 *                   frame to an odd address, as ZeroMQ may deliver them
 *   k x u32 LE      frame lengths (clamped to the bytes left)
 *   rest            the frames' bytes, back to back
 *
 * Each frame gets its own heap block of exactly its length, so ASan catches a
 * read one byte past any frame. Properties checked:
 *   - msg_decode never crashes and a rejection always has a message;
 *   - an accepted message re-encodes to frames that decode to an equal
 *     message, and encoding is canonical (the second encoding is byte for
 *     byte the first).
 */
#include "common/msg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IN_FRAMES (MSG_MAX_FRAMES + 3)

static void die(const char *what, const char *err) {
  fprintf(stderr, "fuzz_msg: %s%s%s\n", what, err ? ": " : "", err ? err : "");
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t k = data[0] % (MAX_IN_FRAMES + 1);
  size_t shift = data[0] >> 7;
  size_t pos = 1;
  size_t lens[MAX_IN_FRAMES];
  for (size_t i = 0; i < k; i++) {
    uint32_t v = 0;
    if (size - pos >= 4) {
      memcpy(&v, data + pos, 4);
      pos += 4;
    }
    lens[i] = v;
  }
  struct msg_frame frames[MAX_IN_FRAMES];
  uint8_t *blocks[MAX_IN_FRAMES];
  for (size_t i = 0; i < k; i++) {
    size_t len = lens[i] < size - pos ? lens[i] : size - pos;
    /* The frame ends exactly where its block ends. */
    blocks[i] = malloc(len + shift ? len + shift : 1);
    uint8_t *p = blocks[i] + shift;
    if (len)
      memcpy(p, data + pos, len);
    pos += len;
    frames[i].data = len ? p : NULL;
    frames[i].len = len;
  }

  struct msg m = {0}, m2 = {0};
  char err[512] = "";
  if (msg_decode(frames, k, &m, err, sizeof(err)) == 0) {
    struct msg_enc e1, e2;
    msg_enc_init(&e1);
    msg_enc_init(&e2);
    msg_encode(&m, &e1);
    if (msg_decode(e1.frames, e1.nframes, &m2, err, sizeof(err)) != 0)
      die("re-encoded message does not decode", err);
    if (!msg_equal(&m, &m2))
      die("re-encoded message decodes to a different message", NULL);
    msg_encode(&m2, &e2);
    if (e1.nframes != e2.nframes)
      die("encoding is not canonical (frame count)", NULL);
    for (size_t i = 0; i < e1.nframes; i++)
      if (e1.frames[i].len != e2.frames[i].len ||
          (e1.frames[i].len &&
           memcmp(e1.frames[i].data, e2.frames[i].data, e1.frames[i].len)))
        die("encoding is not canonical (frame bytes)", NULL);
    msg_enc_deinit(&e1);
    msg_enc_deinit(&e2);
  } else if (!err[0]) {
    die("rejected without a message", NULL);
  }
  msg_deinit(&m);
  msg_deinit(&m2);
  for (size_t i = 0; i < k; i++)
    free(blocks[i]);
  return 0;
}
