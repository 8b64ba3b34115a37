/**
 * Operator SSH public keys: the shape check the site schema and `geminik8s init --ssh-key` share,
 * and the authorized_keys file the agent writes from them. Pure: no I/O.
 *
 * A key line is never quoted back in an error beyond its type word: a private key pasted by mistake
 * must not end up in a log, a console or a CI transcript.
 */

/** Key types an operator key may have. DSA is gone from OpenSSH; sk-* keys need a hardware token. */
export const SSH_KEY_TYPES = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'ssh-rsa'] as const;
export type SshKeyType = (typeof SSH_KEY_TYPES)[number];

export const SSH_KEY_ALLOWED = `one OpenSSH public key line "<type> <base64> [comment]" (the .pub file), type ${SSH_KEY_TYPES.join(', ')}`;

/** Fields of the key blob after its type string (RFC 4253 6.6, RFC 5656 3.1, RFC 8709 4). */
const BLOB_FIELDS: Record<SshKeyType, number> = {
  'ssh-ed25519': 1,
  'ecdsa-sha2-nistp256': 2,
  'ecdsa-sha2-nistp384': 2,
  'ecdsa-sha2-nistp521': 2,
  'ssh-rsa': 2,
};

/** PEM/OpenSSH/PuTTY private key armour, or the base64 of OpenSSH's "openssh-key-v1" magic. */
const PRIVATE_KEY_RE = /PRIVATE KEY|PuTTY-User-Key-File|b3BlbnNzaC1rZXktdjE/;

export function looksLikePrivateKey(text: string): boolean {
  return PRIVATE_KEY_RE.test(text);
}

export interface SshKeyProblem {
  message: string;
  /** What was found, described without quoting the key. */
  found: string;
}

export const PRIVATE_KEY_PROBLEM: SshKeyProblem = {
  message: 'this is a PRIVATE key: remove it, treat that key pair as exposed, and give the public key (the .pub file) instead',
  found: 'a private key (not shown)',
};

/** Reads `count` SSH wire strings (uint32 length + bytes) from `blob`; false unless they fill it exactly. */
function wireStrings(blob: Buffer, count: number): Buffer[] | undefined {
  const out: Buffer[] = [];
  let off = 0;
  for (let i = 0; i < count; i++) {
    if (off + 4 > blob.length) return undefined;
    const len = blob.readUInt32BE(off);
    if (len === 0 || off + 4 + len > blob.length) return undefined;
    out.push(blob.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
  return off === blob.length ? out : undefined;
}

/** What is wrong with `line` as an operator's OpenSSH public key, or undefined when it is one. */
export function sshPublicKeyProblem(line: string): SshKeyProblem | undefined {
  if (looksLikePrivateKey(line)) return PRIVATE_KEY_PROBLEM;
  const length = `a ${line.length}-character string`;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is this check's job
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(line))
    return { message: 'a key must be one line of printable text', found: `${length} with line breaks or control characters` };
  const [type = '', body = ''] = line.trim().split(/[ \t]+/);
  if (!(SSH_KEY_TYPES as readonly string[]).includes(type)) {
    // Options such as from="..." before the type are not supported: the site lists plain keys.
    const shown = /^[a-z0-9@.-]{1,40}$/.test(type) ? `key type ${JSON.stringify(type)}` : length;
    return { message: 'unsupported key type, or not an OpenSSH public key line', found: shown };
  }
  const blob = /^[A-Za-z0-9+/]+={0,2}$/.test(body) && body.length % 4 === 0 ? Buffer.from(body, 'base64') : undefined;
  if (!blob) return { message: `the ${type} key's body is not base64`, found: `a ${body.length}-character body` };
  const fields = wireStrings(blob, 1 + BLOB_FIELDS[type as SshKeyType]);
  if (!fields || fields[0]?.toString('latin1') !== type) {
    return { message: `the base64 body does not hold one ${type} key (cut short when copied, or a different key type)`, found: `a ${blob.length}-byte body` };
  }
  return undefined;
}

/** The authorized_keys file for the operator account: the site's keys, one per line, nothing else. */
export function renderAuthorizedKeys(keys: readonly string[]): string {
  return `${['# Written by geminik8s-agent on every boot from ssh.authorizedKeys in site.yaml: edit the site file, not this.', ...keys.map((k) => k.trim())].join('\n')}\n`;
}
