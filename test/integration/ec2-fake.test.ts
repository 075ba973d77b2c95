/**
 * Keeps the fake EC2 honest: the AWS SDK's own deserializers (built from EC2's service
 * model) must read every response into the documented fields, and errors into the
 * documented codes, statuses and messages.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  AttachVolumeCommand,
  CopySnapshotCommand,
  CreateSnapshotCommand,
  CreateSnapshotsCommand,
  CreateTagsCommand,
  CreateVolumeCommand,
  DeleteSnapshotCommand,
  DeleteVolumeCommand,
  DescribeInstancesCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  DetachVolumeCommand,
  EC2Client,
  EC2ServiceException,
  StartInstancesCommand,
  StopInstancesCommand,
} from '@aws-sdk/client-ec2';
import { type FakeEc2, startFakeEc2 } from '../fakes/ec2.ts';

let fake: FakeEc2;
const client = (region = 'eu-west-1') =>
  new EC2Client({
    region,
    endpoint: fake.url,
    credentials: { accessKeyId: 'AKIDFAKE', secretAccessKey: 'secret' },
    maxAttempts: 1,
  });

before(async () => {
  fake = await startFakeEc2();
});
after(() => fake?.stop());

async function failure(promise: Promise<unknown>): Promise<EC2ServiceException> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof EC2ServiceException, `an EC2 error, got ${error}`);
    return error;
  }
  throw new Error('expected an EC2 error');
}

test('instances, volumes and their attachments read as documented', async () => {
  const { instanceId, volumeIds } = fake.addInstance({
    volumes: [
      { device: '/dev/xvda' },
      { device: '/dev/sdf', size: 100, type: 'io2', tags: { role: 'data' } },
    ],
  });
  const ec2 = client();
  const { Reservations } = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
  const instance = Reservations![0]!.Instances![0]!;
  assert.equal(instance.InstanceId, instanceId);
  assert.equal(instance.State?.Name, 'running');
  assert.equal(instance.Placement?.AvailabilityZone, 'eu-west-1a');
  assert.equal(instance.RootDeviceName, '/dev/xvda');
  assert.deepEqual(
    instance.BlockDeviceMappings!.map((m) => [m.DeviceName, m.Ebs?.VolumeId]),
    [
      ['/dev/xvda', volumeIds[0]],
      ['/dev/sdf', volumeIds[1]],
    ],
  );
  const { Volumes } = await ec2.send(
    new DescribeVolumesCommand({ Filters: [{ Name: 'tag:role', Values: ['data'] }] }),
  );
  assert.equal(Volumes!.length, 1);
  const v = Volumes![0]!;
  assert.deepEqual(
    [v.VolumeId, v.Size, v.VolumeType, v.State, v.Encrypted, v.AvailabilityZone],
    [volumeIds[1], 100, 'io2', 'in-use', false, 'eu-west-1a'],
  );
  assert.deepEqual(
    v.Attachments?.map((a) => [a.InstanceId, a.Device, a.State]),
    [[instanceId, '/dev/sdf', 'attached']],
  );
  assert.deepEqual(v.Tags, [{ Key: 'role', Value: 'data' }]);
  const missing = await failure(
    ec2.send(new DescribeVolumesCommand({ VolumeIds: ['vol-0000000000000000'] })),
  );
  assert.equal(missing.name, 'InvalidVolume.NotFound');
  assert.equal(missing.$metadata.httpStatusCode, 400);
  assert.match(missing.message, /does not exist/);
  const noInstance = await failure(
    client('us-east-1').send(new DescribeInstancesCommand({ InstanceIds: [instanceId] })),
  );
  assert.equal(noInstance.name, 'InvalidInstanceID.NotFound', 'resources live in their own region');
});

test('snapshots go pending, progress, completed; sets are all or nothing; limits and errors are real', async () => {
  const { instanceId, volumeIds } = fake.addInstance({
    volumes: [{ device: '/dev/xvda' }, { device: '/dev/sdf' }],
  });
  const ec2 = client();
  const made = await ec2.send(
    new CreateSnapshotsCommand({
      InstanceSpecification: { InstanceId: instanceId, ExcludeBootVolume: true },
      Description: 'nightly',
      TagSpecifications: [{ ResourceType: 'snapshot', Tags: [{ Key: 'lifeboat:set', Value: 'db' }] }],
    }),
  );
  assert.equal(made.Snapshots!.length, 1, 'the boot volume is left out');
  const snap = made.Snapshots![0]!;
  assert.equal(snap.VolumeId, volumeIds[1]);
  assert.equal(snap.State, 'pending');
  assert.deepEqual(snap.Tags, [{ Key: 'lifeboat:set', Value: 'db' }]);
  const states: string[] = [];
  for (let i = 0; i < 2; i++) {
    const { Snapshots } = await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snap.SnapshotId!] }));
    states.push(`${Snapshots![0]!.State} ${Snapshots![0]!.Progress}`);
  }
  assert.deepEqual(states, ['pending 50%', 'completed 100%']);

  fake.progressStep = 10;
  for (let i = 0; i < 5; i++) await ec2.send(new CreateSnapshotCommand({ VolumeId: volumeIds[0] }));
  const limit = await failure(ec2.send(new CreateSnapshotCommand({ VolumeId: volumeIds[0] })));
  assert.equal(limit.name, 'SnapshotLimitExceeded');
  const set = await failure(
    ec2.send(new CreateSnapshotsCommand({ InstanceSpecification: { InstanceId: instanceId } })),
  );
  assert.equal(set.name, 'SnapshotLimitExceeded');
  assert.equal(
    [...fake.snapshots.values()].filter((s) => s.volumeId === volumeIds[1]).length,
    1,
    'a failed set makes no snapshot of the other volume',
  );
  fake.progressStep = 50;

  fake.failNextSnapshotOf.add(volumeIds[1]!);
  const doomed = await ec2.send(new CreateSnapshotCommand({ VolumeId: volumeIds[1] }));
  const { Snapshots } = await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [doomed.SnapshotId!] }));
  assert.equal(Snapshots![0]!.State, 'error');
  assert.match(Snapshots![0]!.StateMessage ?? '', /failed/);
});

test('copies to another region carry only the tags on the request; dry runs and denials answer their codes', async () => {
  const { volumeIds } = fake.addInstance({ volumes: [{ device: '/dev/xvda', encrypted: true }] });
  const here = client();
  const snap = await here.send(
    new CreateSnapshotCommand({
      VolumeId: volumeIds[0],
      TagSpecifications: [{ ResourceType: 'snapshot', Tags: [{ Key: 'a', Value: '1' }] }],
    }),
  );
  const early = await failure(
    client('eu-central-1').send(
      new CopySnapshotCommand({ SourceRegion: 'eu-west-1', SourceSnapshotId: snap.SnapshotId }),
    ),
  );
  assert.equal(early.name, 'IncorrectState');
  await here.send(new DescribeSnapshotsCommand({ SnapshotIds: [snap.SnapshotId!] }));
  await here.send(new DescribeSnapshotsCommand({ SnapshotIds: [snap.SnapshotId!] }));
  const copy = await client('eu-central-1').send(
    new CopySnapshotCommand({
      SourceRegion: 'eu-west-1',
      SourceSnapshotId: snap.SnapshotId,
      KmsKeyId: 'alias/backup',
      TagSpecifications: [{ ResourceType: 'snapshot', Tags: [{ Key: 'b', Value: '2' }] }],
    }),
  );
  const { Snapshots } = await client('eu-central-1').send(
    new DescribeSnapshotsCommand({ SnapshotIds: [copy.SnapshotId!] }),
  );
  assert.deepEqual(Snapshots![0]!.Tags, [{ Key: 'b', Value: '2' }]);
  assert.equal(Snapshots![0]!.KmsKeyId, 'alias/backup');
  assert.equal(Snapshots![0]!.Encrypted, true);
  await here.send(new CreateTagsCommand({ Resources: [snap.SnapshotId!], Tags: [{ Key: 'c', Value: '3' }] }));
  assert.equal(fake.snapshots.get(snap.SnapshotId!)!.tags.c, '3');

  const dry = await failure(
    here.send(new DeleteSnapshotCommand({ SnapshotId: snap.SnapshotId, DryRun: true })),
  );
  assert.equal(dry.name, 'DryRunOperation');
  assert.equal(dry.$metadata.httpStatusCode, 412);
  fake.denied.add('DeleteSnapshot');
  const denied = await failure(here.send(new DeleteSnapshotCommand({ SnapshotId: snap.SnapshotId })));
  assert.equal(denied.name, 'UnauthorizedOperation');
  assert.equal(denied.$metadata.httpStatusCode, 403);
  fake.denied.delete('DeleteSnapshot');
  await here.send(new DeleteSnapshotCommand({ SnapshotId: snap.SnapshotId }));
  const gone = await failure(here.send(new DescribeSnapshotsCommand({ SnapshotIds: [snap.SnapshotId!] })));
  assert.equal(gone.name, 'InvalidSnapshot.NotFound');
});

test('volumes from snapshots, attachments and instance states move as documented', async () => {
  const ec2 = client();
  const { instanceId, volumeIds } = fake.addInstance({
    volumes: [{ device: '/dev/xvda' }, { device: '/dev/sdf', size: 30 }],
  });
  const snap = await ec2.send(new CreateSnapshotCommand({ VolumeId: volumeIds[1] }));
  const early = await failure(
    ec2.send(new CreateVolumeCommand({ SnapshotId: snap.SnapshotId, AvailabilityZone: 'eu-west-1a' })),
  );
  assert.equal(early.name, 'IncorrectState');
  await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snap.SnapshotId!] }));
  await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snap.SnapshotId!] }));
  const created = await ec2.send(
    new CreateVolumeCommand({
      SnapshotId: snap.SnapshotId,
      AvailabilityZone: 'eu-west-1a',
      VolumeType: 'gp3',
      Iops: 4000,
      Throughput: 250,
      TagSpecifications: [{ ResourceType: 'volume', Tags: [{ Key: 'k', Value: 'v' }] }],
    }),
  );
  assert.deepEqual(
    [created.State, created.Size, created.SnapshotId, created.VolumeType, created.Iops, created.Throughput],
    ['creating', 30, snap.SnapshotId, 'gp3', 4000, 250],
  );
  assert.deepEqual(created.Tags, [{ Key: 'k', Value: 'v' }]);
  const described = async (id: string) =>
    (await ec2.send(new DescribeVolumesCommand({ VolumeIds: [id] }))).Volumes![0]!;
  assert.equal((await described(created.VolumeId!)).State, 'creating');
  assert.equal((await described(created.VolumeId!)).State, 'available');

  const taken = await failure(
    ec2.send(
      new AttachVolumeCommand({ VolumeId: created.VolumeId, InstanceId: instanceId, Device: '/dev/sdf' }),
    ),
  );
  assert.equal(taken.name, 'InvalidParameterValue');
  const root = await failure(ec2.send(new DetachVolumeCommand({ VolumeId: volumeIds[0] })));
  assert.equal(root.name, 'IncorrectState', 'a running instance keeps its root volume');
  const inUse = await failure(ec2.send(new DeleteVolumeCommand({ VolumeId: volumeIds[1] })));
  assert.equal(inUse.name, 'VolumeInUse');

  const stopping = await ec2.send(new StopInstancesCommand({ InstanceIds: [instanceId] }));
  assert.deepEqual(
    [stopping.StoppingInstances![0]!.PreviousState?.Name, stopping.StoppingInstances![0]!.CurrentState?.Name],
    ['running', 'stopping'],
  );
  const stateOf = async () =>
    (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }))).Reservations![0]!
      .Instances![0]!.State?.Name;
  assert.equal(await stateOf(), 'stopping');
  assert.equal(await stateOf(), 'stopped');
  const detach = await ec2.send(new DetachVolumeCommand({ VolumeId: volumeIds[1] }));
  assert.equal(detach.State, 'detaching');
  assert.equal((await described(volumeIds[1]!)).State, 'in-use');
  assert.equal((await described(volumeIds[1]!)).State, 'available');
  const attach = await ec2.send(
    new AttachVolumeCommand({ VolumeId: created.VolumeId, InstanceId: instanceId, Device: '/dev/sdf' }),
  );
  assert.equal(attach.State, 'attaching');
  const after = await described(created.VolumeId!);
  assert.deepEqual(
    after.Attachments?.map((a) => [a.Device, a.State]),
    [['/dev/sdf', 'attaching']],
  );
  assert.equal((await described(created.VolumeId!)).Attachments![0]!.State, 'attached');
  const started = await ec2.send(new StartInstancesCommand({ InstanceIds: [instanceId] }));
  assert.equal(started.StartingInstances![0]!.CurrentState?.Name, 'pending');
  assert.equal(await stateOf(), 'pending');
  assert.equal(await stateOf(), 'running');
  await ec2.send(new DeleteVolumeCommand({ VolumeId: volumeIds[1] }));
  assert.equal(
    (await failure(ec2.send(new DeleteVolumeCommand({ VolumeId: volumeIds[1] })))).name,
    'InvalidVolume.NotFound',
  );
});
