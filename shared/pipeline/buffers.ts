/**
 * The chunk size every streaming stage uses. Small enough that the buffers in flight across
 * all stages stay a few MiB, large enough that per-chunk overhead is negligible.
 */
export const chunkBytes = 256 * 1024;
