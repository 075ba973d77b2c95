import type { Readable } from 'node:stream';

const MiB = 1024 * 1024;

/** How a provider stores an object in parts: S3 multipart uploads, Azure block lists. */
export interface PartSink<Receipt> {
  /** The whole object fitted in the first part: store it in one request. */
  single(data: Buffer): Promise<void>;
  /** Stores part `number` (from 1) and returns what `complete` needs to know of it. */
  part(number: number, data: Buffer): Promise<Receipt>;
  /** Joins the parts, in order, into the object; nothing is visible before. */
  complete(receipts: Receipt[]): Promise<void>;
  /** Drops what was stored after a failure (best effort). */
  abort(): Promise<void>;
}

export interface PartPlan {
  /** The size of part `number`; a growing size lets a stream of unknown length fit the part limit. */
  partSizeFor(number: number): number;
  maxParts: number;
  /** Said when the stream outgrows `maxParts`. */
  tooLarge: string;
}

/**
 * Part bytes the uploader aims to hold at once: the parts in flight plus the one being filled
 * (at least one part is always in flight). 32 MiB keeps a 1 GiB upload under 200 MB resident
 * on a loaded machine: besides the parts, V8 lets about 64 MiB of spent stream chunks wait for
 * its next collection.
 */
const partBudget = 32 * MiB;

export function concurrencyFor(partSize: number): number {
  return Math.max(1, Math.min(4, Math.floor(partBudget / partSize) - 1));
}

/** Reuses part buffers, so that memory stays at the parts in flight and makes no garbage. */
class BufferPool {
  private free: Buffer[] = [];

  take(size: number): Buffer {
    this.free = this.free.filter((b) => b.length === size);
    return this.free.pop() ?? Buffer.allocUnsafeSlow(size);
  }

  give(buffer: Buffer): void {
    this.free.push(buffer);
  }
}

/** A failure of the storage (a part, the single request, the commit), not of the source stream. */
export class SinkFailure extends Error {
  override name = 'SinkFailure';
  constructor(cause: unknown) {
    super((cause as Error)?.message ?? String(cause), { cause });
  }
}

/**
 * Streams `body` into parts of the planned sizes, copying it into pooled buffers, with up to
 * four parts in flight (fewer as parts grow). An object that fits in the first part goes up
 * in one request. On any failure (a part, the commit, the source, an abort) every part in
 * flight is waited for and the sink aborts before the first error is rethrown; a storage
 * failure comes back as a SinkFailure (its cause the provider's error). `body` is not
 * destroyed here: the provider fails it with its own translated error, so that what feeds it
 * reports the storage's words and the upload is aborted before anything else is told.
 */
export async function uploadInParts<Receipt>(
  body: Readable,
  sink: PartSink<Receipt>,
  plan: PartPlan,
): Promise<void> {
  const pool = new BufferPool();
  const receipts: Receipt[] = [];
  const inFlight = new Set<Promise<void>>();
  let started = false;
  let failure: unknown;
  let number = 1;
  let buffer = pool.take(plan.partSizeFor(1));
  let filled = 0;

  const sendPart = async (): Promise<void> => {
    if (number > plan.maxParts) throw new Error(plan.tooLarge);
    started = true;
    const current = number++;
    const data = buffer;
    const sending = sink
      .part(current, data.subarray(0, filled))
      .then((receipt) => {
        receipts[current - 1] = receipt;
        pool.give(data);
      })
      .catch((error) => {
        failure ??= new SinkFailure(error);
      });
    inFlight.add(sending);
    void sending.finally(() => inFlight.delete(sending));
    const size = plan.partSizeFor(number);
    while (inFlight.size >= concurrencyFor(size) && !failure) await Promise.race(inFlight);
    if (failure) throw failure;
    buffer = pool.take(size);
    filled = 0;
  };
  const storage = async (step: () => Promise<void>) => {
    try {
      await step();
    } catch (error) {
      throw new SinkFailure(error);
    }
  };

  try {
    for await (const chunk of body.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
      for (let offset = 0; offset < chunk.length; ) {
        const copied = chunk.copy(buffer, filled, offset);
        filled += copied;
        offset += copied;
        if (filled === buffer.length) await sendPart();
      }
    }
    if (!started) return await storage(() => sink.single(buffer.subarray(0, filled)));
    if (filled > 0) await sendPart();
    await Promise.all(inFlight);
    if (failure) throw failure;
    await storage(() => sink.complete(receipts));
  } catch (error) {
    await Promise.allSettled(inFlight);
    if (started) await sink.abort().catch(() => {});
    throw failure && !(error instanceof Error && error.name === 'AbortError') ? failure : error;
  }
}
