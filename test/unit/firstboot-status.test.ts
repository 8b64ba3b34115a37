import test from 'ava';
import { stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { readStatus, startStatusServer } from '../../firstboot/src/net/status-server.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);

test('status is served as JSON on a unix socket, read-only, and a stale socket does not block a restart', async (t) => {
  const dir = await scratch('gk8s-status');
  const socketPath = path.join(dir, 'run', 'agent.sock');
  let term = 3;
  const first = await startStatusServer(socketPath, () => ({ role: 'leader', term }));
  t.true((await stat(socketPath)).isSocket());
  t.deepEqual(await readStatus(socketPath), { role: 'leader', term: 3 });
  term = 4;
  t.deepEqual(await readStatus(socketPath), { role: 'leader', term: 4 }, 'each request reads the live state');

  const post = await new Promise<number>((resolve, reject) => {
    const req = http.request({ socketPath, path: '/status', method: 'POST' }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
  t.is(post, 405);
  await first.close();

  // A killed agent leaves its socket file behind (close() removed ours, so put one there).
  await writeFile(socketPath, '');
  const second = await startStatusServer(socketPath, () => {
    throw new Error('postgres down');
  });
  t.teardown(() => second.close());
  const err = await readStatus(socketPath);
  t.deepEqual(err, { error: 'postgres down' });
});
