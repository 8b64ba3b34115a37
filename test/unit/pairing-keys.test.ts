import test from 'ava';
import { hkdfSync, randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { decodePairSecret, derivePairKeys, KEY_LABELS } from '../../firstboot/src/pairing/core/keys.ts';

const RAW = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');

test('pair secret decodes from hex, base64 and base64url (with or without padding) to the same bytes', (t) => {
  const hex = RAW.toString('hex');
  const b64 = RAW.toString('base64');
  const b64url = RAW.toString('base64url');
  t.true(b64.endsWith('='));
  for (const s of [hex, hex.toUpperCase(), b64, b64.replace(/=+$/, ''), b64url]) t.deepEqual(decodePairSecret(s), RAW, s);
});

test('malformed or short secrets are rejected without echoing them', (t) => {
  for (const s of ['tiny', RAW.subarray(0, 16).toString('hex'), 'not base64 at all!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!']) {
    const e = t.throws(() => decodePairSecret(s));
    t.false(e?.message.includes(s));
  }
});

test('keys are HKDF-SHA256(secret, salt = site id, info = label), 32 bytes, distinct per label and site', (t) => {
  const secret = RAW.toString('base64');
  const k = derivePairKeys(secret, 'site-a');
  const expect = (info: string, salt = 'site-a') => Buffer.from(hkdfSync('sha256', RAW, Buffer.from(salt), Buffer.from(info), 32));
  t.deepEqual(k.beaconMac, expect(KEY_LABELS.beaconMac));
  t.deepEqual(k.channelPsk, expect(KEY_LABELS.channelPsk));
  t.is(KEY_LABELS.beaconMac, 'beacon-mac');
  t.is(KEY_LABELS.channelPsk, 'channel-psk');
  t.is(k.beaconMac.length, 32);
  t.notDeepEqual(k.beaconMac, k.channelPsk);
  const other = derivePairKeys(secret, 'site-b');
  t.notDeepEqual(other.beaconMac, k.beaconMac);
  t.notDeepEqual(derivePairKeys(randomBytes(32).toString('hex'), 'site-a').beaconMac, k.beaconMac);
  // Same bytes in another encoding: same keys.
  t.deepEqual(derivePairKeys(RAW.toString('hex'), 'site-a').channelPsk, k.channelPsk);
});

test('keys never serialise or inspect to their bytes', (t) => {
  const k = derivePairKeys(RAW.toString('hex'), 'site-a');
  const texts = [JSON.stringify({ k }), inspect(k), String(k), `${inspect({ nested: { k } })}`];
  for (const text of texts) {
    t.regex(text, /redacted/);
    t.false(text.includes(k.beaconMac.toString('hex')));
    t.false(text.includes(k.channelPsk.toString('base64')));
  }
});
