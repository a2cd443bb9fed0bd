"""Verifies a release's provenance with securesystemslib, as docs/signing.md
shows: run in the release folder with the public key's path.

The DSSE envelope must verify with the PEM key (securesystemslib's own key
id), the statement must be SLSA provenance v1, and its subjects must be what
SHA256SUMS lists, each present file with its sha256.
"""
import glob, hashlib, json, os, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
key = SSlibKey.from_crypto(load_pem_public_key(open(sys.argv[1], 'rb').read()))
[path] = glob.glob('*.intoto.jsonl')
envelope = Envelope.from_dict(json.loads(open(path).read()))
envelope.verify([key], 1)
statement = json.loads(envelope.payload)
assert statement['_type'] == 'https://in-toto.io/Statement/v1', statement['_type']
assert statement['predicateType'] == 'https://slsa.dev/provenance/v1'
listed = {line.split('  ')[1]: line.split('  ')[0] for line in open('SHA256SUMS').read().splitlines()}
names = set()
for subject in statement['subject']:
    names.add(subject['name'])
    if os.path.exists(subject['name']):
        actual = hashlib.sha256(open(subject['name'], 'rb').read()).hexdigest()
        assert actual == subject['digest']['sha256'], subject['name']
built = {name for name in listed if not name.endswith(('.sigstore.json', '.intoto.jsonl'))}
assert names == built, (names ^ built)
print('ok', path, len(names), 'subjects')
