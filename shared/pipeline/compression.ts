import { PassThrough, type Transform } from 'node:stream';
import { constants, createGunzip, createGzip, createZstdCompress, createZstdDecompress } from 'node:zlib';
import { UserError } from '../errors.ts';
import { chunkBytes } from './buffers.ts';

export const compressions = ['zstd', 'gzip', 'none'] as const;
export type Compression = (typeof compressions)[number];

/** The file name suffix an artifact gets for its compression. */
export function compressionSuffix(compression: Compression): string {
  return { zstd: '.zst', gzip: '.gz', none: '' }[compression];
}

export function parseCompression(value: string, input = 'compression'): Compression {
  const v = value.trim().toLowerCase();
  if ((compressions as readonly string[]).includes(v)) return v as Compression;
  throw new UserError(`${input}: '${value}' is not accepted; accepted: ${compressions.join(', ')}`);
}

/**
 * zstd level 3 (the zstd default) or gzip level 6 (what `gzip` does). Output comes in
 * chunkBytes pieces: zlib's default of 16 KiB made compression three times slower.
 */
export function compressStream(compression: Compression, level?: number): Transform {
  switch (compression) {
    case 'zstd':
      return createZstdCompress({
        chunkSize: chunkBytes,
        params: {
          [constants.ZSTD_c_compressionLevel]: level ?? 3,
          [constants.ZSTD_c_checksumFlag]: 1,
          [constants.ZSTD_c_nbWorkers]: 0,
        },
      });
    case 'gzip':
      return createGzip({ level: level ?? 6, chunkSize: chunkBytes });
    case 'none':
      return new PassThrough();
  }
}

export function decompressStream(compression: Compression): Transform {
  switch (compression) {
    case 'zstd':
      return createZstdDecompress({ chunkSize: chunkBytes });
    case 'gzip':
      return createGunzip({ chunkSize: chunkBytes });
    case 'none':
      return new PassThrough();
  }
}
