/**
 * The BEGIN record of a `zfs send` stream, read before a single byte reaches `zfs receive`.
 * The stream comes from storage (not trusted), so a restore only feeds zfs what the manifest
 * and the chain expect:
 * - a substream of one filesystem (not a compound `-R` stream, which could carry properties
 *   such as `mountpoint=/etc` and other datasets; not a volume);
 * - the snapshot guid (`toguid`) the manifest records, and for an incremental stream the guid
 *   of the snapshot it applies to (`fromguid`), which the chain's previous link recorded;
 * - the snapshot name the manifest records.
 *
 * Layout (dmu_replay_record_t, the same in zfs-fuse's pool version 23 and OpenZFS 2.x):
 * u32 type (0 = BEGIN), u32 payload length, u64 magic 0x2F5BACBAC, u64 versioninfo (bits 0–1
 * the header type: 1 substream, 2 compound), u64 creation time, u32 objset type (2 = ZFS
 * filesystem, 3 = volume), u32 flags, u64 toguid, u64 fromguid, char toname[256]. A stream
 * written on a machine of the other byte order has the magic byte-swapped.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { UserError } from '../errors.ts';

const beginBytes = 56 + 256;
const magic = 0x2f5bacbacn;

export interface StreamBegin {
  compound: boolean;
  objsetType: number;
  toGuid: string;
  fromGuid: string;
  /** `dataset@snapshot` as the sending host named it. */
  toName: string;
}

/** The BEGIN record of a stream's first bytes; undefined when they are not one. */
export function parseStreamBegin(head: Buffer): StreamBegin | undefined {
  // drr_type 0 (BEGIN) reads the same in either byte order.
  if (head.length < beginBytes || head.readUInt32LE(0) !== 0) return undefined;
  const little = head.readBigUInt64LE(8) === magic;
  if (!little && head.readBigUInt64BE(8) !== magic) return undefined;
  const u64 = (at: number) => (little ? head.readBigUInt64LE(at) : head.readBigUInt64BE(at));
  const u32 = (at: number) => (little ? head.readUInt32LE(at) : head.readUInt32BE(at));
  const name = head.subarray(56, 56 + 256);
  const end = name.indexOf(0);
  return {
    compound: (u64(16) & 3n) === 2n,
    objsetType: u32(32),
    toGuid: u64(40).toString(),
    fromGuid: u64(48).toString(),
    toName: name.subarray(0, end < 0 ? name.length : end).toString('utf8'),
  };
}

export interface ExpectedStream {
  /** Where the stream is from, for messages: the storage key of the artifact. */
  where: string;
  guid: string;
  /** The guid of the snapshot an incremental stream applies to; undefined for a full stream. */
  fromGuid?: string;
  /** The snapshot's name after "@". */
  snapshot: string;
}

/** Why a stream's BEGIN record is not what was expected; undefined when it is. */
export function streamProblem(begin: StreamBegin | undefined, expected: ExpectedStream): string | undefined {
  if (!begin) return 'it does not start with a zfs send BEGIN record';
  if (begin.compound)
    return 'it is a replication (-R) stream; Lifeboat writes and receives streams of one filesystem';
  if (begin.objsetType !== 2) return `it is not a filesystem's stream (objset type ${begin.objsetType})`;
  if (begin.toGuid !== expected.guid)
    return `it is of the snapshot with guid ${begin.toGuid}, the manifest records ${expected.guid}`;
  const from = expected.fromGuid ?? '0';
  if (begin.fromGuid !== from)
    return from === '0'
      ? `it is incremental (from guid ${begin.fromGuid}), the manifest records a full stream`
      : `it applies to the snapshot with guid ${begin.fromGuid}, the chain's previous snapshot has guid ${from}`;
  const short = begin.toName.slice(begin.toName.indexOf('@') + 1);
  if (short !== expected.snapshot)
    return `it names the snapshot '${short}', the manifest records '${expected.snapshot}'`;
  return undefined;
}

/**
 * Passes a send stream through once its BEGIN record is what `expected` says; otherwise fails
 * (a UserError: the backup is damaged or not what its manifest says) before passing anything.
 */
export class StreamGate extends Transform {
  private head: Buffer[] = [];
  private headBytes = 0;
  private open = false;
  private readonly expected: ExpectedStream;

  constructor(expected: ExpectedStream) {
    super();
    this.expected = expected;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.open) {
      callback(null, chunk);
      return;
    }
    this.head.push(chunk);
    this.headBytes += chunk.length;
    if (this.headBytes < beginBytes) {
      callback();
      return;
    }
    const head = Buffer.concat(this.head);
    this.head = [];
    const problem = streamProblem(parseStreamBegin(head), this.expected);
    if (problem) {
      callback(this.refusal(problem));
      return;
    }
    this.open = true;
    callback(null, head);
  }

  override _flush(callback: TransformCallback): void {
    callback(this.open ? null : this.refusal(`it ends after ${this.headBytes} bytes`));
  }

  private refusal(problem: string): UserError {
    return new UserError(`backup: the zfs stream ${this.expected.where} is refused: ${problem}`);
  }
}
