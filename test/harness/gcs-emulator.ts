/**
 * The Cloud Storage emulator from firebase-tools (pinned: it uses internals), run in-process
 * with no Java, no rules engine and no network: only its Express app serving the GCS JSON
 * API, on 127.0.0.1 and a port the OS picks. Bucket get/create routes, which the emulator
 * lacks, are answered here. One emulator per process (firebase-tools keeps a registry).
 */
import http from 'node:http';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { tempDir } from './servers.ts';

const require = createRequire(import.meta.url);
// biome-ignore lint/suspicious/noExplicitAny: firebase-tools internals are untyped
type Loose = Record<string, any>;

const { StorageEmulator } = require('firebase-tools/lib/emulator/storage/index.js') as Loose;
const { createApp } = require('firebase-tools/lib/emulator/storage/server.js') as Loose;
const { EmulatorRegistry } = require('firebase-tools/lib/emulator/registry.js') as Loose;

export const gcsProjectId = 'demo-lifeboat'; // "demo-" projects never call Google

const noRulesRuntime = { alive: false, async start() {}, async stop() {} };
const noRulesManager = {
  async start() {
    return { errors: [], warnings: [], all: [], exist: () => false };
  },
  getRuleset() {
    return undefined;
  },
  async stop() {},
};

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(body));
}

const apiError = (code: number, reason: string, message: string) => ({
  error: { code, message, errors: [{ message, domain: 'global', reason }] },
});

class InProcessStorageEmulator extends (StorageEmulator as new (args: Loose) => Loose) {
  constructor(args: Loose) {
    super(args);
    this._rulesRuntime = noRulesRuntime;
  }
  createRulesManager() {
    return noRulesManager;
  }
  getPersistenceTmpDir() {
    return this.args.blobDir;
  }
  async start() {
    this._app = await createApp(this.args.projectId, this);
    this._app.set('env', 'test');
    const sockets = new Set<Socket>();
    const server = http.createServer((req, res) => this.handle(req, res));
    server.on('connection', (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    this.args.port = (server.address() as { port: number }).port;
    this.destroyServer = () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        for (const socket of sockets) socket.destroy();
      });
  }
  handle(req: http.IncomingMessage, res: http.ServerResponse) {
    if (req.url?.startsWith('/storage/v1/')) req.url = req.url.slice('/storage/v1'.length);
    const { pathname } = new URL(req.url ?? '/', 'http://x');
    // The create-only precondition Lifeboat's manifests use (generation 0), which the
    // emulator ignores: answer 412 when the object exists, as GCS does.
    const upload = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(pathname);
    const search = new URL(req.url ?? '/', 'http://x').searchParams;
    if (req.method === 'POST' && upload && search.get('ifGenerationMatch') === '0' && search.get('name')) {
      if (this.adminStorageLayer.getMetadata(decodeURIComponent(upload[1]!), search.get('name'))) {
        req.resume();
        return sendJson(
          res,
          412,
          apiError(412, 'conditionNotMet', 'At least one of the pre-conditions you specified did not hold.'),
        );
      }
    }
    const bucketPath = /^\/b\/([^/]+)$/.exec(pathname);
    if (req.method === 'GET' && bucketPath) {
      const bucket = this._buckets.get(decodeURIComponent(bucketPath[1]!));
      return bucket
        ? sendJson(res, 200, bucket)
        : sendJson(res, 404, apiError(404, 'notFound', 'The specified bucket does not exist.'));
    }
    if (req.method === 'POST' && pathname === '/b') {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d) => {
        body += d;
      });
      req.on('end', () => {
        const name = (JSON.parse(body || '{}') as { name?: string }).name;
        if (!name) return sendJson(res, 400, apiError(400, 'invalid', 'Missing bucket name.'));
        this.adminStorageLayer.createBucket(name);
        return sendJson(res, 200, this._buckets.get(name));
      });
      return;
    }
    return this._app(req, res);
  }
}

export async function startGcsEmulator(): Promise<{ endpoint: string; stop(): Promise<void> }> {
  const emulator = new InProcessStorageEmulator({
    projectId: gcsProjectId,
    host: '127.0.0.1',
    port: 0,
    auto_download: false,
    blobDir: await tempDir('gcs'),
  });
  await EmulatorRegistry.start(emulator);
  return {
    endpoint: `http://127.0.0.1:${emulator.getInfo().port}`,
    async stop() {
      try {
        await emulator.stop();
      } finally {
        EmulatorRegistry.clear(emulator.getName());
      }
    },
  };
}
