/**
 * A stateful fake of the EC2 API for what snapshot-ebs uses, served over HTTP in the EC2
 * query protocol (form-encoded requests, XML responses and errors) the way the AWS SDK
 * expects — no EC2 emulator can run on this machine. One server holds every region; the
 * region of a request is the one its SigV4 credential scope names.
 *
 * Behaviour kept real: snapshots go pending → (progress) → completed, one step per
 * DescribeSnapshots of them; at most 5 pending snapshots per volume (1 for st1/sc1);
 * CreateSnapshots on an instance is one set (all or nothing); CopySnapshot does not copy
 * tags; DryRun answers DryRunOperation (412) when permitted and UnauthorizedOperation (403)
 * when the action is denied; missing resources answer their NotFound codes.
 * Tests seed and steer it through `fake` (instances, volumes, denied actions, failures).
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeVolume {
  volumeId: string;
  region: string;
  zone: string;
  size: number;
  type: string;
  encrypted: boolean;
  kmsKeyId?: string;
  state: 'creating' | 'available' | 'in-use';
  attachment?: { instanceId: string; device: string; state: 'attaching' | 'attached' | 'detaching' };
  iops?: number;
  throughput?: number;
  tags: Record<string, string>;
  snapshotId?: string;
}

export interface FakeSnapshot {
  snapshotId: string;
  region: string;
  volumeId: string;
  volumeSize: number;
  state: 'pending' | 'completed' | 'error';
  progress: number;
  startTime: string;
  description: string;
  encrypted: boolean;
  kmsKeyId?: string;
  tags: Record<string, string>;
  /** Progress added per DescribeSnapshots naming it. */
  step: number;
  /** Set by a test: the snapshot fails at this progress. */
  failAt?: number;
}

export interface FakeInstance {
  instanceId: string;
  region: string;
  zone: string;
  state: 'pending' | 'running' | 'stopping' | 'stopped';
  rootDevice: string;
}

export interface FakeEc2 {
  url: string;
  volumes: Map<string, FakeVolume>;
  snapshots: Map<string, FakeSnapshot>;
  instances: Map<string, FakeInstance>;
  /** Actions answered with UnauthorizedOperation. */
  denied: Set<string>;
  /** Progress per describe for new snapshots (default 50: completed on the second describe). */
  progressStep: number;
  /** Volume ids whose next snapshot goes to `error` part-way. */
  failNextSnapshotOf: Set<string>;
  /** Devices at which the next AttachVolume fails (as if something else took the attachment point). */
  failAttachAt: Set<string>;
  /** Every request's action, in order. */
  calls: string[];
  addInstance(spec: {
    region?: string;
    zone?: string;
    volumes: {
      device: string;
      size?: number;
      type?: string;
      encrypted?: boolean;
      tags?: Record<string, string>;
    }[];
  }): { instanceId: string; volumeIds: string[] };
  stop(): Promise<void>;
}

class Ec2Error extends Error {
  readonly code: string;
  readonly status: number;
  constructor(code: string, message: string, status = 400) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

const stateCodes = { pending: 0, running: 16, stopping: 64, stopped: 80 } as const;
const id = (prefix: string) => `${prefix}-${randomBytes(8).toString('hex').slice(0, 17)}`;
const esc = (v: unknown) =>
  String(v).replace(
    /[<>&'"]/g,
    (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!,
  );
const tagSet = (tags: Record<string, string>) =>
  `<tagSet>${Object.entries(tags)
    .map(([k, v]) => `<item><key>${esc(k)}</key><value>${esc(v)}</value></item>`)
    .join('')}</tagSet>`;

/** `Prefix.1.Key`-style members of a form into a list of their sub-fields. */
function members(form: URLSearchParams, prefix: string): Map<string, string>[] {
  const out: Map<string, string>[] = [];
  for (const [key, value] of form) {
    const m = new RegExp(`^${prefix.replace('.', '\\.')}\\.(\\d+)(?:\\.(.+))?$`).exec(key);
    if (!m) continue;
    const index = Number(m[1]) - 1;
    out[index] ??= new Map();
    out[index]!.set(m[2] ?? '', value);
  }
  return out.filter(Boolean);
}

function tagsOf(form: URLSearchParams, resourceType: string): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const spec of members(form, 'TagSpecification')) {
    if (spec.get('ResourceType') !== resourceType) continue;
    for (const [key, value] of spec) {
      const m = /^Tag\.(\d+)\.Key$/.exec(key);
      if (m) tags[value] = spec.get(`Tag.${m[1]}.Value`) ?? '';
    }
  }
  return tags;
}

function filtersOf(form: URLSearchParams): { name: string; values: string[] }[] {
  return members(form, 'Filter').map((f) => ({
    name: f.get('Name') ?? '',
    values: [...f.entries()].filter(([k]) => k.startsWith('Value.')).map(([, v]) => v),
  }));
}

function matchesTags(tags: Record<string, string>, filters: { name: string; values: string[] }[]): boolean {
  return filters
    .filter((f) => f.name.startsWith('tag:') || f.name === 'tag-key')
    .every((f) =>
      f.name === 'tag-key'
        ? f.values.some((v) => v in tags)
        : f.values.includes(tags[f.name.slice(4)] ?? '\u0000'),
    );
}

export async function startFakeEc2(): Promise<FakeEc2> {
  const state = {
    volumes: new Map<string, FakeVolume>(),
    snapshots: new Map<string, FakeSnapshot>(),
    instances: new Map<string, FakeInstance>(),
    denied: new Set<string>(),
    progressStep: 50,
    failNextSnapshotOf: new Set<string>(),
    failAttachAt: new Set<string>(),
    calls: [] as string[],
  };

  const pendingOf = (volumeId: string) =>
    [...state.snapshots.values()].filter((s) => s.volumeId === volumeId && s.state === 'pending').length;

  const volumeIn = (region: string, volumeId: string) => {
    const v = state.volumes.get(volumeId);
    if (!v || v.region !== region)
      throw new Ec2Error('InvalidVolume.NotFound', `The volume '${volumeId}' does not exist.`);
    return v;
  };

  const snapshotOf = (
    region: string,
    volume: FakeVolume,
    description: string,
    tags: Record<string, string>,
  ) => {
    const limit = volume.type === 'st1' || volume.type === 'sc1' ? 1 : 5;
    if (pendingOf(volume.volumeId) >= limit) {
      throw new Ec2Error(
        'SnapshotLimitExceeded',
        `The maximum number of pending snapshots (${limit}) for volume ${volume.volumeId} has been reached.`,
      );
    }
    const snap: FakeSnapshot = {
      snapshotId: id('snap'),
      region,
      volumeId: volume.volumeId,
      volumeSize: volume.size,
      state: 'pending',
      progress: 0,
      startTime: new Date().toISOString(),
      description,
      encrypted: volume.encrypted,
      kmsKeyId: volume.kmsKeyId,
      tags,
      step: state.progressStep,
      failAt: state.failNextSnapshotOf.delete(volume.volumeId) ? 50 : undefined,
    };
    return snap;
  };

  const instanceIn = (region: string, instanceId: string) => {
    const inst = state.instances.get(instanceId);
    if (!inst || inst.region !== region)
      throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${instanceId}' does not exist`);
    return inst;
  };

  const changeStates = (form: URLSearchParams, region: string, change: (inst: FakeInstance) => void) => {
    const items = members(form, 'InstanceId').map((m) => {
      const inst = instanceIn(region, m.get('')!);
      const previous = inst.state;
      change(inst);
      return `<item><instanceId>${inst.instanceId}</instanceId><currentState><code>${stateCodes[inst.state]}</code><name>${inst.state}</name></currentState><previousState><code>${stateCodes[previous]}</code><name>${previous}</name></previousState></item>`;
    });
    return `<instancesSet>${items.join('')}</instancesSet>`;
  };

  const snapshotXml = (s: FakeSnapshot) =>
    `<snapshotId>${s.snapshotId}</snapshotId><volumeId>${s.volumeId}</volumeId><status>${s.state}</status>${
      s.state === 'error' ? '<statusMessage>Snapshot failed: internal error</statusMessage>' : ''
    }<startTime>${s.startTime}</startTime><progress>${s.state === 'pending' && s.progress === 0 ? '' : `${s.progress}%`}</progress><ownerId>123456789012</ownerId><volumeSize>${s.volumeSize}</volumeSize><description>${esc(s.description)}</description><encrypted>${s.encrypted}</encrypted>${
      s.kmsKeyId ? `<kmsKeyId>${esc(s.kmsKeyId)}</kmsKeyId>` : ''
    }<storageTier>standard</storageTier>${tagSet(s.tags)}`;

  const volumeXml = (v: FakeVolume) =>
    `<volumeId>${v.volumeId}</volumeId><size>${v.size}</size><snapshotId>${v.snapshotId ?? ''}</snapshotId><availabilityZone>${v.zone}</availabilityZone><status>${v.state}</status><createTime>2026-01-01T00:00:00.000Z</createTime><attachmentSet>${
      v.attachment
        ? `<item><volumeId>${v.volumeId}</volumeId><instanceId>${v.attachment.instanceId}</instanceId><device>${v.attachment.device}</device><status>${v.attachment.state}</status><attachTime>2026-01-01T00:00:00.000Z</attachTime><deleteOnTermination>false</deleteOnTermination></item>`
        : ''
    }</attachmentSet>${tagSet(v.tags)}<volumeType>${v.type}</volumeType>${v.iops ? `<iops>${v.iops}</iops>` : ''}${
      v.throughput ? `<throughput>${v.throughput}</throughput>` : ''
    }<encrypted>${v.encrypted}</encrypted>${
      v.kmsKeyId ? `<kmsKeyId>${esc(v.kmsKeyId)}</kmsKeyId>` : ''
    }<multiAttachEnabled>false</multiAttachEnabled>`;

  const actions: Record<string, (form: URLSearchParams, region: string) => string> = {
    DescribeInstances(form, region) {
      const ids = members(form, 'InstanceId').map((m) => m.get('')!);
      for (const i of ids) {
        const inst = state.instances.get(i);
        if (!inst || inst.region !== region)
          throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${i}' does not exist`);
      }
      const chosen = [...state.instances.values()].filter(
        (i) => i.region === region && (ids.length === 0 || ids.includes(i.instanceId)),
      );
      const xml = `<reservationSet>${chosen
        .map((inst) => {
          const mapping = [...state.volumes.values()]
            .filter((v) => v.attachment?.instanceId === inst.instanceId)
            .map(
              (v) =>
                `<item><deviceName>${v.attachment!.device}</deviceName><ebs><volumeId>${v.volumeId}</volumeId><status>attached</status><attachTime>2026-01-01T00:00:00.000Z</attachTime><deleteOnTermination>false</deleteOnTermination></ebs></item>`,
            )
            .join('');
          return `<item><reservationId>${id('r')}</reservationId><ownerId>123456789012</ownerId><instancesSet><item><instanceId>${inst.instanceId}</instanceId><instanceState><code>${stateCodes[inst.state]}</code><name>${inst.state}</name></instanceState><placement><availabilityZone>${inst.zone}</availabilityZone></placement><rootDeviceType>ebs</rootDeviceType><rootDeviceName>${inst.rootDevice}</rootDeviceName><blockDeviceMapping>${mapping}</blockDeviceMapping>${tagSet({})}</item></instancesSet></item>`;
        })
        .join('')}</reservationSet>`;
      for (const inst of chosen) {
        if (inst.state === 'stopping') inst.state = 'stopped';
        else if (inst.state === 'pending') inst.state = 'running';
      }
      return xml;
    },
    StopInstances(form, region) {
      return changeStates(form, region, (inst) => {
        if (inst.state === 'running' || inst.state === 'pending') inst.state = 'stopping';
      });
    },
    StartInstances(form, region) {
      return changeStates(form, region, (inst) => {
        if (inst.state === 'stopping')
          throw new Ec2Error(
            'IncorrectInstanceState',
            `The instance '${inst.instanceId}' is not in a state from which it can be started.`,
          );
        if (inst.state === 'stopped') inst.state = 'pending';
      });
    },
    CreateVolume(form, region) {
      const zone = form.get('AvailabilityZone') ?? '';
      if (!zone.startsWith(region))
        throw new Ec2Error('InvalidParameterValue', `Invalid availability zone: [${zone}]`);
      const snapshotId = form.get('SnapshotId') ?? undefined;
      const snap = snapshotId ? state.snapshots.get(snapshotId) : undefined;
      if (snapshotId && (!snap || snap.region !== region))
        throw new Ec2Error('InvalidSnapshot.NotFound', `The snapshot '${snapshotId}' does not exist.`);
      if (snap && snap.state !== 'completed')
        throw new Ec2Error('IncorrectState', `Snapshot is in invalid state - ${snap.state}`);
      const size = Number(form.get('Size') ?? snap?.volumeSize ?? 0);
      if (!size)
        throw new Ec2Error('MissingParameter', 'The request must contain the parameter size or snapshotId');
      if (snap && size < snap.volumeSize)
        throw new Ec2Error(
          'InvalidParameterValue',
          `Volume of ${size}GiB is too small; minimum is ${snap.volumeSize}GiB.`,
        );
      const kmsKeyId = form.get('KmsKeyId') ?? snap?.kmsKeyId;
      const volume: FakeVolume = {
        volumeId: id('vol'),
        region,
        zone,
        size,
        type: form.get('VolumeType') ?? 'gp2',
        encrypted:
          Boolean(snap?.encrypted) || form.get('Encrypted') === 'true' || Boolean(form.get('KmsKeyId')),
        kmsKeyId: kmsKeyId ?? undefined,
        state: 'creating',
        tags: tagsOf(form, 'volume'),
        snapshotId,
        iops: form.get('Iops') ? Number(form.get('Iops')) : undefined,
        throughput: form.get('Throughput') ? Number(form.get('Throughput')) : undefined,
      };
      state.volumes.set(volume.volumeId, volume);
      return volumeXml(volume).replace(/<attachmentSet><\/attachmentSet>/, '');
    },
    AttachVolume(form, region) {
      const volume = volumeIn(region, form.get('VolumeId') ?? '');
      const inst = instanceIn(region, form.get('InstanceId') ?? '');
      const device = form.get('Device') ?? '';
      if (volume.state !== 'available')
        throw new Ec2Error('IncorrectState', `${volume.volumeId} is in the '${volume.state}' state.`);
      if (volume.zone !== inst.zone)
        throw new Ec2Error(
          'InvalidVolume.ZoneMismatch',
          `The volume '${volume.volumeId}' is not in the same availability zone as instance '${inst.instanceId}'`,
        );
      const taken = [...state.volumes.values()].some(
        (v) => v.attachment?.instanceId === inst.instanceId && v.attachment.device === device,
      );
      if (taken || state.failAttachAt.delete(device))
        throw new Ec2Error(
          'InvalidParameterValue',
          `Invalid value '${device}' for unixDevice. Attachment point ${device} is already in use`,
        );
      if (device === inst.rootDevice && inst.state !== 'stopped')
        throw new Ec2Error(
          'IncorrectInstanceState',
          `The instance '${inst.instanceId}' is not in the 'stopped' state.`,
        );
      volume.attachment = { instanceId: inst.instanceId, device, state: 'attaching' };
      volume.state = 'in-use';
      return `<volumeId>${volume.volumeId}</volumeId><instanceId>${inst.instanceId}</instanceId><device>${device}</device><status>attaching</status><attachTime>${new Date().toISOString()}</attachTime>`;
    },
    DetachVolume(form, region) {
      const volume = volumeIn(region, form.get('VolumeId') ?? '');
      const a = volume.attachment;
      if (!a)
        throw new Ec2Error('IncorrectState', `Volume '${volume.volumeId}' is in the 'available' state.`);
      const inst = instanceIn(region, a.instanceId);
      if (a.device === inst.rootDevice && inst.state !== 'stopped')
        throw new Ec2Error(
          'IncorrectState',
          `Unable to detach root volume '${volume.volumeId}' from instance '${inst.instanceId}'`,
        );
      a.state = 'detaching';
      return `<volumeId>${volume.volumeId}</volumeId><instanceId>${a.instanceId}</instanceId><device>${a.device}</device><status>detaching</status><attachTime>2026-01-01T00:00:00.000Z</attachTime>`;
    },
    DeleteVolume(form, region) {
      const volume = volumeIn(region, form.get('VolumeId') ?? '');
      if (volume.attachment)
        throw new Ec2Error(
          'VolumeInUse',
          `Volume ${volume.volumeId} is currently attached to ${volume.attachment.instanceId}`,
        );
      state.volumes.delete(volume.volumeId);
      return '<return>true</return>';
    },
    DescribeVolumes(form, region) {
      const ids = members(form, 'VolumeId').map((m) => m.get('')!);
      for (const v of ids) volumeIn(region, v);
      const filters = filtersOf(form);
      const chosen = [...state.volumes.values()].filter(
        (v) =>
          v.region === region &&
          (ids.length === 0 || ids.includes(v.volumeId)) &&
          matchesTags(v.tags, filters),
      );
      const xml = `<volumeSet>${chosen.map((v) => `<item>${volumeXml(v)}</item>`).join('')}</volumeSet>`;
      // Each describe moves a volume one state on, as the real ones move with time.
      for (const v of chosen) {
        if (v.state === 'creating') v.state = 'available';
        if (v.attachment?.state === 'attaching') v.attachment.state = 'attached';
        else if (v.attachment?.state === 'detaching') {
          v.attachment = undefined;
          v.state = 'available';
        }
      }
      return xml;
    },
    CreateSnapshots(form, region) {
      const instanceId = form.get('InstanceSpecification.InstanceId') ?? '';
      const inst = state.instances.get(instanceId);
      if (!inst || inst.region !== region)
        throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${instanceId}' does not exist`);
      const excludeBoot = form.get('InstanceSpecification.ExcludeBootVolume') === 'true';
      const volumes = [...state.volumes.values()].filter(
        (v) =>
          v.attachment?.instanceId === instanceId &&
          !(excludeBoot && v.attachment.device === inst.rootDevice),
      );
      const tags = tagsOf(form, 'snapshot');
      // One set: every snapshot is made, or none.
      const made = volumes.map((v) => snapshotOf(region, v, form.get('Description') ?? '', { ...tags }));
      for (const s of made) state.snapshots.set(s.snapshotId, s);
      return `<snapshotSet>${made
        .map(
          (s) =>
            `<item><description>${esc(s.description)}</description>${tagSet(s.tags)}<encrypted>${s.encrypted}</encrypted><volumeId>${s.volumeId}</volumeId><state>${s.state}</state><volumeSize>${s.volumeSize}</volumeSize><startTime>${s.startTime}</startTime><progress></progress><ownerId>123456789012</ownerId><snapshotId>${s.snapshotId}</snapshotId></item>`,
        )
        .join('')}</snapshotSet>`;
    },
    CreateSnapshot(form, region) {
      const volume = volumeIn(region, form.get('VolumeId') ?? '');
      const s = snapshotOf(region, volume, form.get('Description') ?? '', tagsOf(form, 'snapshot'));
      state.snapshots.set(s.snapshotId, s);
      return snapshotXml(s);
    },
    DescribeSnapshots(form, region) {
      const ids = members(form, 'SnapshotId').map((m) => m.get('')!);
      for (const s of ids) {
        const snap = state.snapshots.get(s);
        if (!snap || snap.region !== region)
          throw new Ec2Error('InvalidSnapshot.NotFound', `The snapshot '${s}' does not exist.`);
      }
      const filters = filtersOf(form);
      const chosen = [...state.snapshots.values()].filter(
        (s) =>
          s.region === region &&
          (ids.length === 0 || ids.includes(s.snapshotId)) &&
          matchesTags(s.tags, filters),
      );
      for (const s of chosen) {
        if (s.state !== 'pending') continue;
        s.progress = Math.min(100, s.progress + s.step);
        if (s.failAt !== undefined && s.progress >= s.failAt) s.state = 'error';
        else if (s.progress >= 100) s.state = 'completed';
      }
      return `<snapshotSet>${chosen.map((s) => `<item>${snapshotXml(s)}</item>`).join('')}</snapshotSet>`;
    },
    CreateTags(form, region) {
      const ids = members(form, 'ResourceId').map((m) => m.get('')!);
      const tags: Record<string, string> = {};
      for (const t of members(form, 'Tag')) tags[t.get('Key')!] = t.get('Value') ?? '';
      for (const r of ids) {
        const target = state.snapshots.get(r) ?? state.volumes.get(r);
        if (!target || target.region !== region)
          throw new Ec2Error(
            r.startsWith('snap-') ? 'InvalidSnapshot.NotFound' : 'InvalidID',
            `The ID '${r}' is not valid`,
          );
        Object.assign(target.tags, tags);
      }
      return '<return>true</return>';
    },
    CopySnapshot(form, region) {
      const sourceRegion = form.get('SourceRegion') ?? '';
      const source = state.snapshots.get(form.get('SourceSnapshotId') ?? '');
      if (!source || source.region !== sourceRegion)
        throw new Ec2Error(
          'InvalidSnapshot.NotFound',
          `The snapshot '${form.get('SourceSnapshotId')}' does not exist.`,
        );
      if (source.state !== 'completed')
        throw new Ec2Error('IncorrectState', `Snapshot ${source.snapshotId} is not in a completed state.`);
      const kmsKeyId = form.get('KmsKeyId') ?? undefined;
      const copy: FakeSnapshot = {
        ...source,
        snapshotId: id('snap'),
        region,
        state: 'pending',
        progress: 0,
        startTime: new Date().toISOString(),
        description: form.get('Description') ?? '',
        encrypted: source.encrypted || form.get('Encrypted') === 'true' || Boolean(kmsKeyId),
        kmsKeyId: kmsKeyId ?? source.kmsKeyId,
        // EC2 does not copy tags: only those on the request.
        tags: tagsOf(form, 'snapshot'),
        step: state.progressStep,
        failAt: undefined,
      };
      state.snapshots.set(copy.snapshotId, copy);
      return `<snapshotId>${copy.snapshotId}</snapshotId>${tagSet(copy.tags)}`;
    },
    DeleteSnapshot(form, region) {
      const snapshotId = form.get('SnapshotId') ?? '';
      const snap = state.snapshots.get(snapshotId);
      if (!snap || snap.region !== region)
        throw new Ec2Error('InvalidSnapshot.NotFound', `The snapshot '${snapshotId}' does not exist.`);
      if (snap.tags['fake:in-use-by-ami'])
        throw new Ec2Error(
          'InvalidSnapshot.InUse',
          `The snapshot ${snapshotId} is currently in use by ami-0123456789abcdef0`,
        );
      state.snapshots.delete(snapshotId);
      return '<return>true</return>';
    },
  };

  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const form = new URLSearchParams(body);
      const action = form.get('Action') ?? '';
      const region =
        /Credential=[^/]+\/\d{8}\/([^/]+)\/ec2\//.exec(req.headers.authorization ?? '')?.[1] ?? '';
      const requestId = randomBytes(16).toString('hex');
      state.calls.push(action);
      const reply = (status: number, xml: string) => {
        res.writeHead(status, { 'content-type': 'text/xml;charset=UTF-8', 'x-amzn-requestid': requestId });
        res.end(`<?xml version="1.0" encoding="UTF-8"?>\n${xml}`);
      };
      try {
        if (!region)
          throw new Ec2Error(
            'AuthFailure',
            'AWS was not able to validate the provided access credentials',
            401,
          );
        const handler = actions[action];
        if (!handler)
          throw new Ec2Error('InvalidAction', `The action ${action} is not valid for this web service.`);
        if (state.denied.has(action)) {
          throw new Ec2Error(
            'UnauthorizedOperation',
            `You are not authorized to perform this operation. User: arn:aws:iam::123456789012:user/test is not authorized to perform: ec2:${action}`,
            403,
          );
        }
        if (form.get('DryRun') === 'true') {
          throw new Ec2Error('DryRunOperation', 'Request would have succeeded, but DryRun flag is set.', 412);
        }
        const inner = handler(form, region);
        reply(
          200,
          `<${action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>${requestId}</requestId>${inner}</${action}Response>`,
        );
      } catch (error) {
        const e =
          error instanceof Ec2Error
            ? error
            : new Ec2Error('InternalError', `An internal error has occurred: ${error}`, 500);
        reply(
          e.status,
          `<Response><Errors><Error><Code>${e.code}</Code><Message>${esc(e.message)}</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`,
        );
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    ...state,
    get progressStep() {
      return state.progressStep;
    },
    set progressStep(step: number) {
      state.progressStep = step;
    },
    addInstance(spec) {
      const region = spec.region ?? 'eu-west-1';
      const zone = spec.zone ?? `${region}a`;
      const instanceId = id('i');
      state.instances.set(instanceId, {
        instanceId,
        region,
        zone,
        state: 'running',
        rootDevice: spec.volumes[0]?.device ?? '/dev/xvda',
      });
      const volumeIds = spec.volumes.map((v) => {
        const volumeId = id('vol');
        state.volumes.set(volumeId, {
          volumeId,
          region,
          zone,
          size: v.size ?? 8,
          type: v.type ?? 'gp3',
          encrypted: v.encrypted ?? false,
          state: 'in-use',
          attachment: { instanceId, device: v.device, state: 'attached' },
          tags: { ...(v.tags ?? {}) },
        });
        return volumeId;
      });
      return { instanceId, volumeIds };
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
