// Verifies Sigstore bundles offline with sigstore-js (@sigstore/verify),
// against one public key and no transparency log, certificate log or
// timestamp authority: `node sigstore-verify.cjs KEY.pem FILE BUNDLE...`
// (pairs of a file and its bundle). Prints one line per pair, `ok FILE` or
// `FAIL FILE: reason`, and exits 1 if any failed.
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

const [keyPath, ...pairs] = process.argv.slice(2);
const pem = fs.readFileSync(keyPath, 'utf8');
const der = crypto.createPublicKey(pem).export({ type: 'spki', format: 'der' });
const emptyRoot = {
  mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
  tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [],
};
let failed = false;
for (let i = 0; i < pairs.length; i += 2) {
  const [file, bundlePath] = [pairs[i], pairs[i + 1]];
  try {
    const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
    const hint = bundle.verificationMaterial.content.publicKey.hint;
    const keys = { [hint]: { rawBytes: der, keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start: new Date(0) } } };
    const verifier = new Verifier(toTrustMaterial(emptyRoot, keys), {
      tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0,
    });
    verifier.verify(toSignedEntity(bundle, fs.readFileSync(file)));
    console.log(`ok ${file}`);
  } catch (err) {
    failed = true;
    console.log(`FAIL ${file}: ${err.message}`);
  }
}
process.exit(failed ? 1 : 0);
