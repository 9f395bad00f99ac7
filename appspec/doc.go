// Package appspec loads Scalebox application definitions: an app.yaml file
// plus the variables of scalebox.env, --env-file files and the process
// environment.
//
// # Loading
//
// [Load] reads the variable files and calls [Parse], which
//
//  1. parses the YAML into nodes (so every value keeps its line and column);
//  2. expands ${VAR} in every scalar (keys and values) after parsing: the
//     expanded text is data and is never re-parsed as YAML structure, but a
//     plain (unquoted) scalar is re-resolved as YAML would resolve it, so
//     "task_max_seconds: ${T}" with T=10 is the integer 10 and an empty
//     expansion is null;
//  3. rewrites the aliases of all three Scalebox naming generations to the
//     canonical names (jobs → modules, variables → arguments, hosts → slots,
//     start_message → start_task, task_timeout_seconds → task_max_seconds, …)
//     and rejects unknown keys with a "did you mean" hint;
//  4. validates the canonical document against the published JSON Schema
//     ([schema.AppSchema]), mapping each violation back to its YAML position;
//  5. runs semantic checks (module names, sink modules, main router, sink
//     cycles, retry rules, slots, resources) and builds the normalised [App].
//
// Every problem found is reported, not only the first: Parse returns an
// [ErrorList] whose entries read "app.yaml:12:7: modules.calc.parameters.retry_rules: …".
//
// # Values
//
// Scalebox treats module arguments and parameters as strings. [Module.Arguments]
// and [Module.Parameters] keep them so (raw text after expansion, canonical
// key names); the typed fields of [Module] hold the interpreted values with
// their defaults. An empty value (VAR= in scalebox.env) means "unset": typed
// fields fall back to their default.
package appspec
