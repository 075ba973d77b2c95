/**
 * A local HTTP server that records every request (method, path, body) and answers as told:
 * a status, or never (a hanging receiver). For notify-url and webhook-url tests.
 */
import http from 'node:http';
import type net from 'node:net';

export interface Recorded {
  method: string;
  path: string;
  contentType: string;
  body: string;
}

export interface Recorder {
  url: string;
  requests: Recorded[];
  /** What the next requests get: a status, or 'hang' (no answer until the server stops). */
  answer: number | 'hang';
  stop(): Promise<void>;
}

export async function startRecorder(): Promise<Recorder> {
  const sockets = new Set<net.Socket>();
  const recorder: Recorder = {
    url: '',
    requests: [],
    answer: 200,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      recorder.requests.push({
        method: req.method ?? '',
        path: req.url ?? '',
        contentType: req.headers['content-type'] ?? '',
        body: Buffer.concat(chunks).toString('utf8'),
      });
      if (recorder.answer === 'hang') return;
      res.writeHead(recorder.answer).end('OK');
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  recorder.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return recorder;
}
