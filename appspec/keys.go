package appspec

// Alias tables, per object kind, map every accepted older spelling to its
// canonical key (spec §0.1, §2.2–§2.5). The canonical keys themselves are
// the properties of the matching $defs entry in schema/app.schema.json, so
// the schema stays the single list of what is allowed; these tables only
// add the names of earlier generations. The object kinds are named by the
// JSON pointer fragment of their schema definition.
const (
	kindApp       = ""                        // top level
	kindAppParams = "/$defs/appParameters"    // top-level parameters
	kindModule    = "/$defs/module"           // one module
	kindArgs      = "/$defs/moduleArguments"  // module arguments (container side)
	kindParams    = "/$defs/moduleParameters" // module parameters (server side)
)

var aliases = map[string]map[string]string{
	kindApp: {
		"jobs": "modules",
	},
	kindAppParams: {
		"message_router":         "main_router",
		"default_message_router": "main_router",
		"default_sleep_count":    "default_idle_polls",
	},
	kindModule: {
		"sink_jobs":  "sink_modules",
		"sink_vjobs": "sink_vmodules",
		"hosts":      "slots",
		"variables":  "arguments",
		"paths":      "volumes",
	},
	kindArgs: {
		"task_timeout_seconds":   "task_max_seconds",
		"sleep_interval_seconds": "poll_interval_seconds",
		"sleep_seconds":          "poll_interval_seconds",
		"max_sleep_count":        "max_idle_polls",
		"dir_limit_gb":           "dir_quota_gb",
		"dir_free_gb":            "free_space_gb",
		"space_free_gb":          "free_space_gb",
		"bulk_message_size":      "task_batch_size",
	},
	kindParams: {
		"start_message":              "start_task",
		"task_timeout_seconds":       "task_max_seconds",
		"message_router_index":       "router_index",
		"main_router_index":          "router_index",
		"bulk_message_size":          "task_batch_size",
		"task_cache_expired_minutes": "task_dedup_cache_ttl_minutes",
		"group_regex":                "key_group_regex",
		"group_index":                "key_group_index",
		"max_tasks_per_minutes":      "max_tasks_per_minute",
		"global_vtasks_size":         "global_vtask_size",
		"group_vtasks_size":          "group_vtask_size",
		"host_vtasks_size":           "host_vtask_size",
		// Misspelling used by production apps (kaichao/app-mwa
		// pipelines/main/app.yaml, "visiable: no"); Scalebox ignored it.
		"visiable": "visible",
	},
}

// knownSlotOptions are the values allowed in the comma list of the
// slot_options argument (spec §2.4), current and Gen-1.
var knownSlotOptions = []string{
	"always_running", "reserved_on_exit", "tmpfs_workdir", "disable_local_mapping",
	"disable_data_mapping", "enable_trace", "wrap_debug", "async_task_creation",
	"slot_on_head", "with_headers", "hide_local_ip",
}

// Canonical names of the keys read into typed fields.
const (
	keyModules      = "modules"
	keyParameters   = "parameters"
	keyArguments    = "arguments"
	keyMainRouter   = "main_router"
	keySinkModules  = "sink_modules"
	keySinkVModules = "sink_vmodules"
	keySlots        = "slots"
	keyStartTask    = "start_task"
	keyRetryRules   = "retry_rules"
	keyCodePath     = "code_path"
	keySlotOptions  = "slot_options"
	keyScheduleMode = "schedule_mode"
	keyResources    = "resources"
	keyEnvironments = "environments"
)

// rawKeys are top-level blocks kept verbatim (after expansion) in
// App.ClusterDefs.
var rawKeys = []string{"clusters", "specs", "vcluster"}
