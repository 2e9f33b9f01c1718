// Validates Prometheus Operator resources against the operator's own API schemas, as shipped by the npm
// package @kubernetes-models/prometheus-operator (generated from the operator's Go API types).
// Usage: node validate_crds.mjs NODE_MODULES_DIR < manifests.json
// Reads a JSON array of manifests; prints a JSON array of {kind, name, error} (error null when valid).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modulesDir] = process.argv.slice(2);
const manifests = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const manifest of manifests) {
  const [group, version] = manifest.apiVersion.split("/");
  const file = join(modulesDir, "@kubernetes-models/prometheus-operator", group, version, `${manifest.kind}.js`);
  let error = null;
  try {
    const models = await import(pathToFileURL(file).href);
    new models[manifest.kind](manifest).validate();
  } catch (caught) {
    error = caught.code === "ERR_MODULE_NOT_FOUND" ? `no schema for ${manifest.apiVersion} ${manifest.kind}` : caught.message;
  }
  results.push({ kind: manifest.kind, name: manifest.metadata?.name ?? null, error });
}
process.stdout.write(JSON.stringify(results));
