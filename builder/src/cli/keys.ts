/** Update-signing keys on the operator's machine: `geminik8s keygen`, and reading the files build and verify take. */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { keyId, loadPrivateKey, loadPublicKey } from '../../../firstboot/src/upgrade/bundle.ts';
import { CliError, EXIT } from './exit-codes.ts';

export async function readKey(file: string, kind: 'private' | 'public'): Promise<KeyObject> {
  const pem = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new CliError(`${file}: cannot read the ${kind} key (${e.code ?? e.message})`, EXIT.invalidInput);
  });
  try {
    return kind === 'private' ? loadPrivateKey(pem, file) : loadPublicKey(pem, file);
  } catch (e) {
    throw new CliError((e as Error).message, EXIT.invalidInput);
  }
}

/** Writes `<prefix>.key` (PKCS#8 PEM, 0600, created exclusively unless `force`) and `<prefix>.pub` (SPKI PEM). */
export async function generateSigningKey(prefix: string, force: boolean): Promise<{ keyId: string; privateKey: string; publicKey: string }> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const files = { privateKey: `${prefix}.key`, publicKey: `${prefix}.pub` };
  const flag = force ? 'w' : 'wx';
  try {
    if (force) await rm(files.privateKey, { force: true });
    await writeFile(files.privateKey, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST')
      throw new CliError(`${files.privateKey} exists: keep it, or replace it with --force`, EXIT.invalidInput);
    throw e;
  }
  await writeFile(files.publicKey, publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644, flag: 'w' });
  return { keyId: keyId(publicKey), ...files };
}
