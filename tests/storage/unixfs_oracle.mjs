// An independent UnixFS importer for the CID tests: js-ipfs's own `ipfs-unixfs-importer`
// (installed with the npm `ipfs` package), balanced layout, raw leaves, CIDv1, with the chunk
// size and the links per node given by the caller so that deep trees stay tiny.
// Reads one JSON object on stdin: {"chunk_size": 4, "max_links": 2, "files": ["<hex>", ...]}
// and prints one JSON line: the CIDv1 (base32) of each file, in order.
import { importer } from "ipfs-unixfs-importer";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const options = {
  strategy: "balanced",
  chunker: "fixed",
  maxChunkSize: request.chunk_size,
  maxChildrenPerNode: request.max_links,
  rawLeaves: true,
  cidVersion: 1,
  reduceSingleLeafToSelf: true,
  onlyHash: true,
};
const nowhere = { put: async (cid) => cid }; // onlyHash: nothing is stored

const cids = [];
for (const hex of request.files) {
  let root = null;
  for await (const entry of importer([{ content: Buffer.from(hex, "hex") }], nowhere, options)) {
    root = entry.cid;
  }
  cids.push(root.toString());
}
process.stdout.write(JSON.stringify(cids) + "\n");
