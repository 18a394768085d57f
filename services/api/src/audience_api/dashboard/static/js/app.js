// The dashboard shell: sign-in, project choice and a hash router over the views.
import { api, session, whenUnauthorized, itemsOf } from "./api.js";
import { destroyCharts } from "./charts.js";
import { h, replace, errorText, toast } from "./ui.js";
import { audiencesView } from "./views/audiences.js";
import { audienceView } from "./views/audience.js";
import { pipelineView } from "./views/pipeline.js";
import { runsView } from "./views/runs.js";
import { campaignsView } from "./views/campaigns.js";

const ROUTES = [
  [/^#\/audiences\/([^/]+)$/, "audiences", audienceView],
  [/^#\/audiences$/, "audiences", audiencesView],
  [/^#\/pipeline$/, "pipeline", pipelineView],
  [/^#\/runs$/, "runs", runsView],
  [/^#\/campaigns(?:\/([^/]+))?$/, "campaigns", campaignsView],
];

const $ = (id) => document.getElementById(id);
let cleanup = null;

function showSignIn(message = "") {
  teardown();
  replace($("view"));
  $("nav").hidden = true;
  $("session").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("api-key").focus();
}

function teardown() {
  if (cleanup) cleanup();
  cleanup = null;
  destroyCharts();
}

async function loadProjects(key) {
  const projects = itemsOf(await api.projects(key));
  const select = $("project-select");
  replace(select, projects.map((p) => h("option", { value: p.id }, `${p.name} (${p.id})`)));
  if (!projects.some((p) => p.id === session.projectId)) session.projectId = projects[0]?.id ?? null;
  select.value = session.projectId ?? "";
  select.disabled = projects.length < 2;
  return projects;
}

async function signIn(key) {
  try {
    const projects = await loadProjects(key);
    if (!projects.length) throw new Error("This key reaches no project yet; create one first.");
    session.key = key;
    $("sign-in").hidden = true;
    $("nav").hidden = false;
    $("session").hidden = false;
    if (!location.hash || location.hash === "#") location.hash = "#/audiences";
    else route();
  } catch (error) {
    session.clear();
    showSignIn(error.status === 401 ? "That API key is not valid." : errorText(error));
  }
}

function route() {
  if (!session.key) return showSignIn();
  $("sign-in").hidden = true;
  const hash = location.hash || "#/audiences";
  const match = ROUTES.map(([pattern, section, view]) => [pattern.exec(hash), section, view])
    .find(([found]) => found);
  if (!match) { location.hash = "#/audiences"; return; }
  const [found, section, view] = match;
  teardown();
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const root = replace($("view"));
  const params = found.slice(1).map((part) => (part ? decodeURIComponent(part) : part));
  try {
    cleanup = view(root, ...params) || null;
  } catch (error) {
    toast(errorText(error), "error");
  }
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  $("api-key").value = "";
  if (key) signIn(key);
});
$("sign-out").addEventListener("click", () => { session.clear(); showSignIn(); });
$("project-select").addEventListener("change", (event) => {
  session.projectId = event.target.value;
  location.hash = "#/audiences";
  route();
});
whenUnauthorized(() => { session.clear(); showSignIn("Your key was revoked or is no longer valid."); });
window.addEventListener("hashchange", route);

if (session.key) signIn(session.key);
else showSignIn();
