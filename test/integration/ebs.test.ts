/**
 * snapshot-ebs against the fake EC2 (test/fakes/ec2.ts): crash-consistent instance sets,
 * tags, waiting with progress, cross-region copies, the manifest in the catalog, and the
 * failures — a quiesce command that fails, a snapshot that goes to error, a timeout.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command, CommandResult } from '../../shared/action/spec.ts';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { restoreCommand } from '../../shared/commands/restore.ts';
import { snapshotEbsCommand } from '../../shared/commands/snapshot-ebs.ts';
import { verifyRestoreCommand } from '../../shared/commands/verify-restore.ts';
import { type EbsFacts, snapshotEbs } from '../../shared/ebs/snapshot.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { prune } from '../../shared/retention/prune.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { VerifyReport } from '../../shared/verify/report.ts';
import { type FakeEc2, startFakeEc2 } from '../fakes/ec2.ts';
import { tempDir } from '../harness/servers.ts';

let fake: FakeEc2;
let work: string;
const saved: Record<string, string | undefined> = {};
const env = {
  AWS_ENDPOINT_URL_EC2: '',
  AWS_ACCESS_KEY_ID: 'AKIDFAKE',
  AWS_SECRET_ACCESS_KEY: 'secret',
  AWS_REGION: 'eu-west-1',
  AWS_EC2_METADATA_DISABLED: 'true',
};

before(async () => {
  fake = await startFakeEc2();
  work = await tempDir('ebs');
  env.AWS_ENDPOINT_URL_EC2 = fake.url;
  for (const [k, v] of Object.entries(env)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
});

after(async () => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  await fake?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

const logs: string[] = [];
async function snapshot(inputs: Record<string, string>): Promise<CommandResult> {
  const all: Record<string, string> = { 'poll-interval': '10ms', ...inputs };
  const command = snapshotEbsCommand as unknown as Command<never>;
  const read = makeReader(command, (spec) => all[spec.name] ?? spec.default);
  return runCommand(command, read, { info: (m) => logs.push(m), warn: (m) => logs.push(`warning: ${m}`) });
}

const storage = () => path.join(work, 'backups');
const snapshotsOf = (backupId: string) =>
  [...fake.snapshots.values()].filter((s) => s.tags['lifeboat:backup-id'] === backupId);

describe('an instance, crash-consistently', () => {
  let result: CommandResult;
  let instance: { instanceId: string; volumeIds: string[] };
  before(async () => {
    instance = fake.addInstance({
      volumes: [
        { device: '/dev/xvda' },
        { device: '/dev/sdf', size: 100 },
        { device: '/dev/sdg', size: 50, encrypted: true },
      ],
    });
    fake.progressStep = 25;
    logs.length = 0;
    result = await snapshot({
      storage: storage(),
      set: 'db-cluster',
      'instance-id': instance.instanceId,
      'exclude-boot-volume': 'true',
      tags: 'team=db, env=prod',
    });
    fake.progressStep = 50;
  });

  test('one CreateSnapshots call, the boot volume left out, every snapshot completed', () => {
    const facts = JSON.parse(result.outputs.result!) as EbsFacts;
    assert.deepEqual(
      facts.snapshots.map((s) => [s.volumeId, s.device, s.sizeGiB, s.encrypted, s.state]),
      [
        [instance.volumeIds[1], '/dev/sdf', 100, false, 'completed'],
        [instance.volumeIds[2], '/dev/sdg', 50, true, 'completed'],
      ],
    );
    assert.equal(fake.calls.filter((c) => c === 'CreateSnapshots').length, 1);
    assert.equal(fake.calls.filter((c) => c === 'CreateSnapshot').length, 0);
    assert.deepEqual(Object.keys(JSON.parse(result.outputs['snapshot-ids']!)), [
      instance.volumeIds[1],
      instance.volumeIds[2],
    ]);
  });

  test('every snapshot carries the set, the backup id, its source and the user tags', () => {
    const id = result.outputs['backup-id']!;
    const made = snapshotsOf(id);
    assert.equal(made.length, 2);
    for (const s of made) {
      assert.equal(s.tags['lifeboat:set'], 'db-cluster');
      assert.equal(s.tags['lifeboat:source-volume'], s.volumeId);
      assert.equal(s.tags['lifeboat:source-instance'], instance.instanceId);
      assert.match(s.tags['lifeboat:source-device']!, /^\/dev\/sd[fg]$/);
      assert.equal(s.tags.team, 'db');
      assert.equal(s.tags.env, 'prod');
    }
  });

  test("progress is printed from the snapshots' own figure", () => {
    assert.ok(
      logs.some((l) => /snap-\w+ 25%/.test(l)),
      logs.join('\n'),
    );
    assert.ok(logs.some((l) => /snap-\w+ 100%, snap-\w+ 100%/.test(l)));
  });

  test('the manifest is committed in the catalog like every backup', async () => {
    const catalog = new Catalog(openStorage(storage()));
    const manifest = await catalog.resolve('db-cluster', 'latest');
    assert.equal(manifest.id, result.outputs['backup-id']);
    assert.equal(manifest.kind, 'ebs');
    assert.deepEqual(manifest.artifacts, []);
    const facts = manifest.facts as unknown as EbsFacts;
    assert.equal(facts.snapshots.length, 2);
    assert.equal(facts.snapshots[0]!.zone, 'eu-west-1a');
    assert.match(manifest.contents.excluded.join(), /boot volume/);
  });
});

test('volumes by id and by tag filter, each with its own CreateSnapshot', async () => {
  const { volumeIds } = fake.addInstance({
    volumes: [{ device: '/dev/xvda', tags: { backup: 'nightly' } }, { device: '/dev/sdf' }],
  });
  const byId = await snapshot({ set: 'by-id', 'volume-ids': volumeIds[1]! });
  assert.equal(byId.outputs.uri, '', 'no storage: tags alone identify the set');
  assert.deepEqual(Object.keys(JSON.parse(byId.outputs['snapshot-ids']!)), [volumeIds[1]]);
  const byTag = await snapshot({ set: 'by-tag', 'volume-filters': 'backup=nightly', storage: storage() });
  assert.deepEqual(Object.keys(JSON.parse(byTag.outputs['snapshot-ids']!)), [volumeIds[0]]);
  await assert.rejects(
    snapshot({ set: 'x', 'volume-filters': 'backup=never' }),
    /volume-filters: no volume has the tags backup=never/,
  );
  await assert.rejects(
    snapshot({ set: 'x', 'volume-ids': 'vol-0000000000000000' }),
    /volume-ids: InvalidVolume\.NotFound/,
  );
});

test('copies to a second region carry the tags (EC2 copies none) and are recorded', async () => {
  const { volumeIds } = fake.addInstance({ volumes: [{ device: '/dev/xvda' }] });
  const result = await snapshot({
    storage: storage(),
    set: 'copied',
    'volume-ids': volumeIds[0]!,
    'copy-to-regions': 'eu-central-1',
    'kms-key-id': 'alias/dr',
  });
  const facts = JSON.parse(result.outputs.result!) as EbsFacts;
  const copy = facts.snapshots[0]!.copies[0]!;
  assert.equal(copy.region, 'eu-central-1');
  assert.equal(copy.state, 'completed');
  const stored = fake.snapshots.get(copy.snapshotId)!;
  assert.equal(stored.region, 'eu-central-1');
  assert.equal(stored.kmsKeyId, 'alias/dr');
  assert.equal(stored.tags['lifeboat:set'], 'copied');
  assert.equal(stored.tags['lifeboat:source-volume'], volumeIds[0]);
  const manifest = await new Catalog(openStorage(storage())).resolve('copied', 'latest');
  assert.equal((manifest.facts as unknown as EbsFacts).snapshots[0]!.copies[0]!.snapshotId, copy.snapshotId);
});

describe('failures leave no backup', () => {
  test('a quiesce command that fails: no snapshot, the post-command still runs, a clear error', async () => {
    const { volumeIds } = fake.addInstance({ volumes: [{ device: '/dev/xvda' }] });
    const marker = path.join(work, 'post-ran');
    const before = fake.snapshots.size;
    await assert.rejects(
      snapshot({
        storage: storage(),
        set: 'quiesce',
        'volume-ids': volumeIds[0]!,
        'pre-command': 'echo stopping the mirror; exit 4',
        'post-command': `touch ${marker}`,
      }),
      /pre-command: failed \(exit status 4\)/,
    );
    assert.equal(fake.snapshots.size, before, 'no snapshot');
    await fs.access(marker);
    assert.deepEqual(await new Catalog(openStorage(storage())).listBackups('quiesce'), []);
  });

  test('a snapshot that goes to error: the others are deleted and nothing is committed', async () => {
    const { volumeIds } = fake.addInstance({ volumes: [{ device: '/dev/xvda' }, { device: '/dev/sdf' }] });
    fake.failNextSnapshotOf.add(volumeIds[1]!);
    await assert.rejects(
      snapshot({ storage: storage(), set: 'broken', 'volume-ids': volumeIds.join(',') }),
      /snapshot snap-\w+ in eu-west-1 failed \(state error: Snapshot failed: internal error\)/,
    );
    assert.equal([...fake.snapshots.values()].filter((s) => volumeIds.includes(s.volumeId)).length, 0);
    assert.deepEqual(await new Catalog(openStorage(storage())).listBackups('broken'), []);
  });

  test('a timeout: the pending snapshots are deleted and nothing is committed', async () => {
    const { volumeIds } = fake.addInstance({ volumes: [{ device: '/dev/xvda' }] });
    fake.progressStep = 0;
    try {
      await assert.rejects(
        snapshot({
          storage: storage(),
          set: 'slow',
          'volume-ids': volumeIds[0]!,
          timeout: '300ms',
          'poll-interval': '50ms',
        }),
        /timeout: snapshot-ebs did not finish within/,
      );
    } finally {
      fake.progressStep = 50;
    }
    assert.equal([...fake.snapshots.values()].filter((s) => s.volumeId === volumeIds[0]).length, 0);
    assert.deepEqual(await new Catalog(openStorage(storage())).listBackups('slow'), []);
  });

  test('a denied permission names the call and the policy to fix', async () => {
    const { instanceId } = fake.addInstance({ volumes: [{ device: '/dev/xvda' }] });
    fake.denied.add('CreateSnapshots');
    try {
      await assert.rejects(
        snapshot({ set: 'denied', 'instance-id': instanceId }),
        /CreateSnapshots of i-\w+: not allowed \(.*ec2:CreateSnapshots\); grant it/,
      );
    } finally {
      fake.denied.delete('CreateSnapshots');
    }
  });

  test('bad inputs each get one line', async () => {
    await assert.rejects(
      snapshot({ set: 'x', 'volume-ids': 'vol-1', 'instance-id': 'i-0123456789abcdef0' }),
      /give exactly one way to select volumes \(more than one given\)/,
    );
    await assert.rejects(
      snapshot({ set: 'x', 'volume-ids': 'disk1' }),
      /volume-ids: 'disk1' is not a volume id/,
    );
    await assert.rejects(
      snapshot({ set: 'x', 'volume-ids': 'vol-0123456789abcdef0', tags: 'oops' }),
      /tags: 'oops' is not accepted/,
    );
    await assert.rejects(
      snapshot({
        set: 'x',
        'volume-ids': 'vol-0123456789abcdef0',
        'copy-to-regions': 'eu-central-1',
        wait: 'false',
      }),
      /copy-to-regions: needs wait: true/,
    );
  });
});

test("prune-retention deletes an EBS backup's snapshots in every region, and keeps one an AMI uses", async () => {
  const { volumeIds } = fake.addInstance({ volumes: [{ device: '/dev/xvda' }, { device: '/dev/sdf' }] });
  const ids: string[] = [];
  for (const minute of [0, 1, 2]) {
    const run = await snapshotEbs({
      storage: openStorage(storage()),
      set: 'pruned',
      region: 'eu-west-1',
      selection: { by: 'volume-ids', volumeIds },
      tags: {},
      wait: true,
      copyToRegions: minute === 0 ? ['eu-central-1'] : [],
      pollIntervalMs: 5,
      logger: silentLogger,
      now: () => new Date(Date.UTC(2026, 10, 1 + minute, 3, 15)),
    });
    ids.push(run.id);
  }
  const oldest = (await new Catalog(openStorage(storage())).readManifest('pruned', ids[0]!))
    .facts as unknown as EbsFacts;
  const second = (await new Catalog(openStorage(storage())).readManifest('pruned', ids[1]!))
    .facts as unknown as EbsFacts;
  // An AMI was registered from one snapshot of the second backup: EC2 refuses to delete it.
  fake.snapshots.get(second.snapshots[0]!.snapshotId)!.tags['fake:in-use-by-ami'] = 'ami-0123';
  const report = await prune({
    storage: openStorage(storage()),
    sets: ['pruned'],
    policy: { last: 1, tags: [], timezone: 'UTC', keepVerified: 0, minKeep: 1, orphanGraceSeconds: 86400 },
    dryRun: false,
    logger: silentLogger,
    now: () => new Date(Date.UTC(2026, 10, 10)),
  });
  const set = report.sets[0]!;
  assert.deepEqual(set.deletedBackups.sort(), [ids[0], ids[1]].sort());
  assert.equal(
    set.snapshots.deleted.length,
    4 + 2 - 1,
    'two originals and two copies, and one of the second backup',
  );
  assert.deepEqual(
    set.snapshots.kept.map((k) => k.snapshotId),
    [second.snapshots[0]!.snapshotId],
  );
  assert.match(set.snapshots.kept[0]!.reason, /InvalidSnapshot\.InUse: .*in use by ami-/);
  for (const s of oldest.snapshots) {
    assert.equal(fake.snapshots.has(s.snapshotId), false);
    assert.equal(fake.snapshots.has(s.copies[0]!.snapshotId), false, 'the copy in eu-central-1 is gone too');
  }
  const newest = (await new Catalog(openStorage(storage())).resolve('pruned', 'latest'))
    .facts as unknown as EbsFacts;
  assert.ok(
    newest.snapshots.every((s) => fake.snapshots.has(s.snapshotId)),
    'the kept backup keeps its snapshots',
  );
});

test('a snapshot call that fails part-way deletes the snapshots already made', async () => {
  const { volumeIds } = fake.addInstance({
    volumes: [{ device: '/dev/xvda' }, { device: '/dev/sdf', type: 'st1' }],
  });
  // st1 volumes allow one pending snapshot: this one makes the second CreateSnapshot fail.
  fake.snapshots.set('snap-0busy', {
    snapshotId: 'snap-0busy',
    region: 'eu-west-1',
    volumeId: volumeIds[1]!,
    volumeSize: 8,
    state: 'pending',
    progress: 0,
    startTime: new Date().toISOString(),
    description: '',
    encrypted: false,
    tags: {},
    step: 0,
  });
  await assert.rejects(
    snapshot({ storage: storage(), set: 'partial', 'volume-ids': volumeIds.join(',') }),
    /CreateSnapshot of vol-\w+: SnapshotLimitExceeded/,
  );
  assert.equal([...fake.snapshots.values()].filter((s) => s.volumeId === volumeIds[0]).length, 0);
  assert.deepEqual(await new Catalog(openStorage(storage())).listBackups('partial'), []);
  fake.snapshots.delete('snap-0busy');
});

test('a post-command that fails after the snapshots: the backup is committed and the error says so', async () => {
  const { volumeIds } = fake.addInstance({ volumes: [{ device: '/dev/xvda' }] });
  await assert.rejects(
    snapshot({
      storage: storage(),
      set: 'post-fails',
      'volume-ids': volumeIds[0]!,
      'post-command': 'exit 2',
    }),
    /post-command: failed after the snapshots were taken .* is complete/,
  );
  const manifest = await new Catalog(openStorage(storage())).resolve('post-fails', 'latest');
  const facts = manifest.facts as unknown as EbsFacts;
  assert.ok(fake.snapshots.has(facts.snapshots[0]!.snapshotId));
});

describe('verify-restore of an EBS backup', () => {
  async function verify(set: string, extra: Record<string, string> = {}) {
    const all: Record<string, string> = {
      storage: storage(),
      set,
      'poll-interval': '10ms',
      'report-file': path.join(work, `report-${set}.json`),
      ...extra,
    };
    const command = verifyRestoreCommand as unknown as Command<never>;
    const result = await runCommand(
      command,
      makeReader(command, (spec) => all[spec.name] ?? spec.default),
      silentLogger,
    );
    return { result, report: JSON.parse(await fs.readFile(all['report-file']!, 'utf8')) as VerifyReport };
  }
  const verificationVolumes = () =>
    [...fake.volumes.values()].filter((v) => v.tags['lifeboat:purpose'] === 'verify-restore');

  test('a volume from each snapshot, checked and deleted; RTO reported', async () => {
    const { instanceId } = fake.addInstance({
      volumes: [{ device: '/dev/xvda' }, { device: '/dev/sdf', size: 40, encrypted: true }],
    });
    await snapshot({ storage: storage(), set: 'verified-disks', 'instance-id': instanceId });
    const { result, report } = await verify('verified-disks', { 'max-age': '1h' });
    assert.equal(report.passed, true, JSON.stringify(report.checks, null, 1));
    assert.equal(result.outputs.passed, 'true');
    assert.deepEqual(
      report.checks.map((c) => c.name.replace(/snap-\w+/, 'snap')),
      [
        'snapshot: snap (/dev/xvda)',
        'snapshot: snap (/dev/sdf)',
        'volume: /dev/xvda',
        'volume: /dev/sdf',
        'RPO: max-age 1h00m',
      ],
    );
    assert.match(report.checks[3]!.detail, /40 GiB, encrypted/);
    assert.ok(report.restoreSeconds !== null && report.restoreSeconds >= 0);
    assert.equal(report.environment.removed, true);
    assert.deepEqual(verificationVolumes(), [], 'the test volumes are deleted');
  });

  test('a snapshot whose tags or size disagree with the manifest fails, and the volumes are still deleted', async () => {
    const { volumeIds } = fake.addInstance({ volumes: [{ device: '/dev/xvda', size: 10 }] });
    const made = await snapshot({ storage: storage(), set: 'tampered-disks', 'volume-ids': volumeIds[0]! });
    const snapshotId = JSON.parse(made.outputs['snapshot-ids']!)[volumeIds[0]!];
    fake.snapshots.get(snapshotId)!.tags['lifeboat:backup-id'] = 'something-else';
    const { result, report } = await verify('tampered-disks');
    assert.equal(report.passed, false);
    assert.match(report.checks[0]!.detail, /tag lifeboat:backup-id is 'something-else'/);
    assert.ok(result.failed?.some((l) => l.includes('snapshot: snap-')));
    assert.deepEqual(verificationVolumes(), []);
  });
});

describe('restore of an EBS backup', () => {
  async function restore(set: string, extra: Record<string, string>) {
    const all: Record<string, string> = { storage: storage(), set, 'poll-interval': '10ms', ...extra };
    const command = restoreCommand as unknown as Command<never>;
    return runCommand(
      command,
      makeReader(command, (spec) => all[spec.name] ?? spec.default),
      silentLogger,
    );
  }
  const attachedAt = (instanceId: string) =>
    Object.fromEntries(
      [...fake.volumes.values()]
        .filter((v) => v.attachment?.instanceId === instanceId)
        .map((v) => [v.attachment!.device, v.volumeId]),
    );

  async function backedUp(set: string) {
    const machine = fake.addInstance({
      volumes: [{ device: '/dev/xvda' }, { device: '/dev/sdf', size: 20 }, { device: '/dev/sdg', size: 30 }],
    });
    await snapshot({ storage: storage(), set, 'instance-id': machine.instanceId });
    return machine;
  }

  test('swap: the instance stopped, new volumes at the same devices, old ones kept and tagged, started again', async () => {
    const { instanceId, volumeIds } = await backedUp('swapped');
    const result = await restore('swapped', {
      swap: 'true',
      'stop-instance': 'true',
      'volume-type': 'gp3',
      iops: '4000',
    });
    const restored = JSON.parse(result.outputs.result!) as {
      volumes: { device: string; volumeId: string; replaced: string }[];
    };
    const now = attachedAt(instanceId);
    for (const v of restored.volumes) {
      assert.equal(now[v.device], v.volumeId, `${v.device} holds the new volume`);
      assert.equal(fake.volumes.get(v.volumeId)!.type, 'gp3');
      assert.equal(fake.volumes.get(v.volumeId)!.iops, 4000);
      const old = fake.volumes.get(v.replaced)!;
      assert.equal(old.state, 'available');
      assert.equal(old.tags['lifeboat:replaced-by'], v.volumeId);
    }
    assert.deepEqual(
      restored.volumes.map((v) => v.replaced),
      volumeIds,
    );
    assert.equal(fake.instances.get(instanceId)!.state, 'running');
    assert.ok(fake.calls.includes('StopInstances') && fake.calls.includes('StartInstances'));
  });

  test('an attach that fails rolls everything back: old volumes attached again, new ones deleted', async () => {
    const { instanceId, volumeIds } = await backedUp('rolled-back');
    const before = attachedAt(instanceId);
    fake.failAttachAt.add('/dev/sdg');
    await assert.rejects(
      restore('rolled-back', { swap: 'true', 'stop-instance': 'true' }),
      /swap failed: AttachVolume vol-\w+ at \/dev\/sdg: .*Attachment point \/dev\/sdg is already in use.*; rolled back/,
    );
    assert.deepEqual(attachedAt(instanceId), before);
    assert.deepEqual(Object.values(before).sort(), [...volumeIds].sort());
    assert.deepEqual(
      [...fake.volumes.values()].filter((v) => v.tags['lifeboat:set'] === 'rolled-back' && v.snapshotId),
      [],
      'the new volumes are deleted',
    );
    assert.equal(
      fake.instances.get(instanceId)!.state === 'pending' ||
        fake.instances.get(instanceId)!.state === 'running',
      true,
    );
  });

  test('without swap the volumes are only created; a root swap on a running instance is refused', async () => {
    const { instanceId } = await backedUp('created-only');
    const result = await restore('created-only', {});
    const ids = result.outputs.target!.split(',');
    assert.equal(ids.length, 3);
    assert.ok(
      ids.every((id) => fake.volumes.get(id)!.state === 'available' && !fake.volumes.get(id)!.attachment),
    );
    await assert.rejects(
      restore('created-only', { swap: 'true' }),
      /stop-instance: swapping the root volume \(\/dev\/xvda\) needs i-\w+ stopped/,
    );
    assert.equal(fake.instances.get(instanceId)!.state, 'running');
  });

  test('a dry run asks EC2 whether each call is allowed, and creates nothing', async () => {
    await backedUp('dry');
    const volumes = fake.volumes.size;
    const ok = await restore('dry', { swap: 'true', 'stop-instance': 'true', 'dry-run': 'true' });
    assert.match(ok.summary.heading, /Dry-run restore/);
    assert.equal(fake.volumes.size, volumes);
    fake.denied.add('AttachVolume');
    try {
      await assert.rejects(
        restore('dry', { swap: 'true', 'stop-instance': 'true', 'dry-run': 'true' }),
        /AttachVolume \(dry run\): not allowed .*ec2:AttachVolume/,
      );
    } finally {
      fake.denied.delete('AttachVolume');
    }
    assert.equal(fake.volumes.size, volumes);
  });
});
