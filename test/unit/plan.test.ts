import test from 'ava';
import { resolveConfig } from '../../builder/src/config/resolve.ts';
import { REPO_ROOT } from '../../builder/src/cli/paths.ts';
import { artifactName, planBuild, type PlanInputs, type StepId } from '../../builder/src/plan/plan.ts';

async function inputs(profile = 'edge-datastore', hardware = 'generic-x86_64-uefi'): Promise<PlanInputs> {
  const config = await resolveConfig({ profile, hardware, repoRoot: REPO_ROOT });
  return {
    config,
    mirror: 'file:///srv/mirror/debian',
    rootfsRecipe: 'r1',
    rootfsSourceDateEpoch: 1686355200,
    agentSource: 'a1',
    overlayTree: 'o1',
    diskRecipe: 'd1',
    sourceDateEpoch: 1700000000,
  };
}

function changedSteps(a: PlanInputs, b: PlanInputs): StepId[] {
  const before = new Map(planBuild(a).map((s) => [s.id, s.key]));
  return planBuild(b)
    .filter((s) => before.get(s.id) !== s.key)
    .map((s) => s.id);
}

test('the same inputs give the same keys (a no-change rebuild reuses every step)', async (t) => {
  const i = await inputs();
  t.deepEqual(changedSteps(i, i), []);
  t.deepEqual(
    planBuild(i).map((s) => s.id),
    ['kine', 'agent', 'overlays', 'rootfs', 'rootTree', 'disk', 'artifacts'],
  );
});

test('an overlay change rebuilds only overlays and what consumes them', async (t) => {
  const i = await inputs();
  t.deepEqual(changedSteps(i, { ...i, overlayTree: 'o2' }), ['overlays', 'rootTree', 'disk', 'artifacts']);
});

test('a package change rebuilds the rootfs but not Kine or the agent', async (t) => {
  const i = await inputs();
  const more = { ...i, config: { ...i.config, packages: [...i.config.packages, 'vim'].sort() } };
  t.deepEqual(changedSteps(i, more), ['rootfs', 'rootTree', 'disk', 'artifacts']);
});

test('an agent change does not rebuild the rootfs', async (t) => {
  const i = await inputs();
  t.deepEqual(changedSteps(i, { ...i, agentSource: 'a2' }), ['agent', 'rootTree', 'disk', 'artifacts']);
});

test('a new commit (SOURCE_DATE_EPOCH) redoes every step that writes it, not the rootfs, which has a date of its own', async (t) => {
  const i = await inputs();
  t.deepEqual(changedSteps(i, { ...i, sourceDateEpoch: i.sourceDateEpoch + 1 }), ['overlays', 'rootTree', 'disk', 'artifacts']);
  t.deepEqual(changedSteps(i, { ...i, rootfsSourceDateEpoch: i.rootfsSourceDateEpoch + 1 }), ['rootfs', 'rootTree', 'disk', 'artifacts']);
});

test('stamping a site at build time only re-assembles the disk', async (t) => {
  const i = await inputs();
  t.deepEqual(changedSteps(i, { ...i, site: 's1' }), ['disk', 'artifacts']);
});

test('the steps whose output holds a site file stamped at build time are the private ones (never cached)', async (t) => {
  const i = await inputs();
  t.deepEqual(
    planBuild(i)
      .filter((s) => s.holdsSecrets)
      .map((s) => s.id),
    [],
  );
  t.deepEqual(
    planBuild({ ...i, site: 's1' })
      .filter((s) => s.holdsSecrets)
      .map((s) => s.id),
    ['disk', 'artifacts'],
  );
});

test('profiles with Kubernetes plan a kubernetes component step, keyed by its source tree', async (t) => {
  const i = await inputs('edge-standard');
  const plan = planBuild(i);
  t.deepEqual(
    plan.map((s) => s.id),
    ['kubernetes', 'kine', 'images', 'agent', 'overlays', 'rootfs', 'rootTree', 'disk', 'artifacts'],
  );
  t.deepEqual(plan.find((s) => s.id === 'rootTree')?.dependsOn, ['rootfs', 'kine', 'kubernetes', 'images', 'agent', 'overlays']);
  t.deepEqual(changedSteps(i, { ...i, componentTrees: { 'components/kubernetes': 'changed' } }), ['kubernetes', 'rootTree', 'disk', 'artifacts']);
  t.is(artifactName(i.config), 'edge-standard-generic-x86_64-uefi-0.1.0');
});

test("upstream Kubernetes bakes in container images, keyed by their programs, the archive code, the profile's extra archives and SOURCE_DATE_EPOCH", async (t) => {
  const i = await inputs('edge-standard');
  const images = planBuild(i).find((s) => s.id === 'images');
  t.like(images, { title: 'container images (pause, hello, coredns; amd64)', dependsOn: [] });
  t.deepEqual(changedSteps(i, { ...i, componentTrees: { 'components/pause': 'changed' } }), ['images', 'rootTree', 'disk', 'artifacts']);
  t.deepEqual(changedSteps(i, { ...i, componentTrees: { 'components/hello': 'changed' } }), ['images', 'rootTree', 'disk', 'artifacts']);
  t.deepEqual(changedSteps(i, { ...i, imagesRecipe: 'changed' }), ['images', 'rootTree', 'disk', 'artifacts']);
  t.deepEqual(changedSteps(i, { ...i, sourceDateEpoch: i.sourceDateEpoch + 1 }), ['images', 'overlays', 'rootTree', 'disk', 'artifacts']);
  const kubernetes = i.config.profile.components.kubernetes!;
  const extra = { name: 'nginx', version: 'v1.27.0', sources: [{ artifactDir: 'artifacts' }] };
  const withExtra = {
    ...i,
    config: { ...i.config, profile: { ...i.config.profile, components: { ...i.config.profile.components, kubernetes: { ...kubernetes, images: [extra] } } } },
  };
  // The overlays render the whole profile, so they follow any profile change.
  t.deepEqual(changedSteps(i, withExtra), ['images', 'overlays', 'rootTree', 'disk', 'artifacts']);
  t.is(planBuild(withExtra).find((s) => s.id === 'images')?.title, 'container images (pause, hello, coredns, nginx; amd64)');
});

test('K3s and datastore-only profiles plan no images step (K3s brings its own images)', async (t) => {
  for (const profile of ['edge-static', 'edge-datastore']) {
    const plan = planBuild(await inputs(profile));
    t.false(
      plan.some((s) => s.id === 'images'),
      profile,
    );
    t.false(plan.find((s) => s.id === 'rootTree')?.dependsOn.includes('images'), profile);
  }
});

for (const profile of ['edge-datastore', 'edge-standard', 'edge-static']) {
  test(`${profile}: what the profile names is fetched, verified and rendered before the rootfs is built, and every step runs after what it consumes`, async (t) => {
    const plan = planBuild(await inputs(profile));
    const position = (id: StepId) => plan.findIndex((s) => s.id === id);
    const rootfs = position('rootfs');
    t.true(rootfs > 0);
    for (const id of [
      'kine',
      'agent',
      'overlays',
      ...(profile === 'edge-datastore' ? [] : ['kubernetes']),
      ...(profile === 'edge-standard' ? ['images'] : []),
    ] as StepId[]) {
      t.true(position(id) >= 0 && position(id) < rootfs, `${id} runs before rootfs`);
    }
    for (const [i, step] of plan.entries()) {
      for (const dep of step.dependsOn) t.true(position(dep) >= 0 && position(dep) < i, `${step.id} runs after ${dep}`);
    }
  });
}

test('the arch is a property of the hardware: an arm64 build plans the same steps, every key its own, with the arm64 kernel and grub', async (t) => {
  const x86 = await inputs('edge-standard');
  const arm = await inputs('edge-standard', 'generic-arm64-uefi');
  t.is(arm.config.hardware.arch, 'arm64');
  t.deepEqual(
    planBuild(arm).map((s) => s.id),
    planBuild(x86).map((s) => s.id),
  );
  t.deepEqual(
    changedSteps(x86, arm).sort(),
    planBuild(x86)
      .map((s) => s.id)
      .sort(),
    'no step output is shared between arches',
  );
  t.true(arm.config.packages.includes('linux-image-arm64'));
  t.true(arm.config.packages.includes('grub-efi-arm64-bin'), 'the disk step takes arm64-efi modules from the root');
  t.false(arm.config.packages.some((p) => p.endsWith('-amd64')));
  t.is(artifactName(arm.config), 'edge-standard-generic-arm64-uefi-0.1.0');
});
